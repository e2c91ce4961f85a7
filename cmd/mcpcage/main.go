// Command mcpcage is the mcpcage CLI and shim. See package cli.
package main

import (
	"os"

	"github.com/mcpcage/mcpcage/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
