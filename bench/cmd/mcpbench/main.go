// Command mcpbench is the harness `make bench` runs. See package bench.
package main

import (
	"os"

	"github.com/mcpcage/mcpcage/bench"
)

func main() { os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr)) }
