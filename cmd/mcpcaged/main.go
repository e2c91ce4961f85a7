// Command mcpcaged is the mcpcage daemon. See package daemon.
package main

import (
	"os"

	"github.com/mcpcage/mcpcage/daemon"
)

func main() { os.Exit(daemon.Main(os.Args[1:], os.Stderr)) }
