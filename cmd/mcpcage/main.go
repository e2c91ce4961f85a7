// Command mcpcage is the mcpcage CLI and shim. See package cli.
package main

import (
	"os"

	"github.com/mcpcage/mcpcage/cli"
	_ "github.com/mcpcage/mcpcage/internal/nodump" // the client's pipes are the shim's alone
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
