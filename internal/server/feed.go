package server

import "sync"

// feed is the store's revision as this replica last saw it, the bundle it
// last wrote, and the wake-up of long polls when the revision moves.
type feed struct {
	mu       sync.RWMutex
	revision int64
	changed  chan struct{} // closed and replaced at each revision change
	bundle   []byte        // last bundle.pem written
}

func newFeed() *feed { return &feed{changed: make(chan struct{})} }

// set records revision rev and bundle. If the revision moved, it calls
// moved and then wakes every long poll; it says whether the bundle
// changed.
func (f *feed) set(rev int64, bundle []byte, moved func()) (bundleChanged bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev != f.revision {
		f.revision = rev
		moved()
		close(f.changed)
		f.changed = make(chan struct{})
	}
	bundleChanged = string(bundle) != string(f.bundle)
	f.bundle = bundle
	return bundleChanged
}

// wait returns the current revision and a channel closed at the next.
func (f *feed) wait() (int64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.revision, f.changed
}

func (f *feed) current() int64 {
	rev, _ := f.wait()
	return rev
}
