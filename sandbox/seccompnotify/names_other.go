//go:build !amd64

package seccompnotify

// names is empty off amd64: events carry the number ("syscall 40").
var names = map[int]string{}
