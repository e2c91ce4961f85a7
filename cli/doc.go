// Package cli is the mcpcage command line: the shim (`mcpcage run`) and the
// commands that talk to mcpcaged over its socket. Each command is a client
// of the daemon; only `config check` works alone.
package cli
