package fscred

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func TestDo(t *testing.T) {
	testenv.Require(t, os.Geteuid() == 0, "root (CAP_SETUID, CAP_SETGID)")
	dir, err := os.MkdirTemp("", "fscred-") // in /tmp, which every user searches (t.TempDir's parent is root's only)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte("x"), 0o640); err != nil { // root's group reads it
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cred     Cred
		readable bool
	}{
		{"root", Cred{}, true},
		{"another user", Cred{UID: 4242, GID: 4242}, false},
		{"another user in root's group", Cred{UID: 4242, GID: 4242, Groups: []uint32{0}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var uid int
			err := Do(tt.cred, func() error {
				uid, _ = unix.SetfsuidRetUid(-1)
				return unix.Faccessat2(unix.AT_FDCWD, private, unix.R_OK, unix.AT_EACCESS)
			})
			if uint32(uid) != tt.cred.UID {
				t.Errorf("fsuid in f = %d, want %d", uid, tt.cred.UID)
			}
			if (err == nil) != tt.readable {
				t.Errorf("read access = %v, want readable %v", err, tt.readable)
			}
		})
	}
	if uid, _ := unix.SetfsuidRetUid(-1); uid != os.Geteuid() {
		t.Errorf("the caller's thread has fsuid %d after Do, want %d", uid, os.Geteuid())
	}
}
