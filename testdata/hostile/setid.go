package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setID is the attack "setid DIR": in DIR (a writable mount), every way
// this program knows to leave a set-user-ID or set-group-ID file behind,
// which would run, for whoever starts it on the host, with the rights of
// the server's user (nosuid holds only inside the sandbox). It escapes
// when any file in DIR ends with either bit; the detail says what each
// way got.
func setID(dir string) (string, error) {
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		return "", err
	}
	plain := func(name string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, self, 0o755)
	}
	ways := []struct {
		name string
		try  func() error
	}{
		{"chmod", func() error {
			p, err := plain("chmod")
			if err != nil {
				return err
			}
			return unix.Chmod(p, 0o4755)
		}},
		{"fchmod", func() error {
			p, err := plain("fchmod")
			if err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return unix.Fchmod(int(f.Fd()), 0o2755)
		}},
		{"fchmodat", func() error {
			if _, err := plain("fchmodat"); err != nil {
				return err
			}
			return unix.Fchmodat(unix.AT_FDCWD, filepath.Join(dir, "fchmodat"), 0o6755, 0)
		}},
		{"open O_CREAT", func() error {
			fd, err := unix.Open(filepath.Join(dir, "open"), unix.O_CREAT|unix.O_WRONLY, 0o4755)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"openat O_CREAT", func() error {
			fd, err := unix.Openat(unix.AT_FDCWD, filepath.Join(dir, "openat"), unix.O_CREAT|unix.O_WRONLY, 0o2755)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"creat", func() error {
			p, err := unix.BytePtrFromString(filepath.Join(dir, "creat"))
			if err != nil {
				return err
			}
			fd, _, errno := unix.Syscall(unix.SYS_CREAT, uintptr(unsafe.Pointer(p)), 0o4755, 0)
			if errno != 0 {
				return errno
			}
			return unix.Close(int(fd))
		}},
		{"mknod", func() error {
			return unix.Mknod(filepath.Join(dir, "mknod"), unix.S_IFREG|0o4755, 0)
		}},
		{"openat2", func() error {
			fd, err := unix.Openat2(unix.AT_FDCWD, filepath.Join(dir, "openat2"), &unix.OpenHow{Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o4755})
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
	}
	var got []string
	for _, w := range ways {
		err := w.try()
		got = append(got, fmt.Sprintf("%s: %v", w.name, errText(err)))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var setid []string
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, e.Name()), &st) == nil && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			setid = append(setid, fmt.Sprintf("%s %o", e.Name(), st.Mode&0o7777))
		}
	}
	detail := strings.Join(got, "; ")
	if len(setid) > 0 {
		return "set-ID files: " + strings.Join(setid, ", ") + " (" + detail + ")", nil
	}
	return detail, fmt.Errorf("no set-ID file")
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
