package sandbox

import (
	"context"
	"testing"
)

// TestImageUseIsPerReference: taking an image and removing it exclude
// each other for the same reference only.
func TestImageUseIsPerReference(t *testing.T) {
	var u imageUse
	release, err := u.take(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.startRemoving("a"); ok {
		t.Fatal("an image being taken was marked for removal")
	}
	done, ok := u.startRemoving("b")
	if !ok {
		t.Fatal("another image could not be removed while one is taken")
	}
	// Taking b waits for its removal; taking c does not.
	if rc, err := u.take(context.Background(), "c"); err != nil {
		t.Fatal(err)
	} else {
		rc()
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.take(gaveUp, "b"); err == nil {
		t.Fatal("an image was taken while it was being removed")
	}
	took := make(chan error, 1)
	go func() {
		rb, err := u.take(context.Background(), "b")
		if err == nil {
			rb()
		}
		took <- err
	}()
	done()
	if err := <-took; err != nil {
		t.Fatalf("taking an image once its removal ended: %v", err)
	}
	release()
	release() // a second release is a no-op
	if _, ok := u.startRemoving("a"); !ok {
		t.Fatal("a released image could not be removed")
	}
	if len(u.taking) != 0 {
		t.Fatalf("marks left: %v", u.taking)
	}
}
