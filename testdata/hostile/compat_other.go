//go:build !amd64

package main

// readCompat needs the i386 system call entry, which only amd64 has here.
func readCompat(string) ([]byte, error) {
	return nil, errNoCompat
}
