package agent

import (
	"encoding/hex"
	"testing"

	"github.com/rampartsec/rampart/internal/api"
)

// During a burn-down the sync names the root every SVID must descend
// from; an SVID whose intermediate another root signed is due at once,
// whatever its renewal time; outside a burn-down nothing is.
func TestFromOldRoot(t *testing.T) {
	h := testHeld(t)
	inter := *h.Chain[0] // stands in for the intermediate: only its authority key ID is read
	inter.AuthorityKeyId = []byte{0xaa, 0xbb}
	h.Chain = append(h.Chain, &inter)
	a := &Agent{}
	for _, tc := range []struct {
		name string
		root string
		want bool
	}{
		{"no burn-down", "", false},
		{"under the new root", hex.EncodeToString([]byte{0xaa, 0xbb}), false},
		{"under another root", "ccdd", true},
	} {
		a.applyReissue(api.SyncResponse{ReissueUnlessRoot: tc.root})
		if got := a.fromOldRoot(h); got != tc.want {
			t.Errorf("%s: fromOldRoot = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A chain without its intermediate (never served that way) is not
	// mistaken for an old one.
	a.applyReissue(api.SyncResponse{ReissueUnlessRoot: "ccdd"})
	if a.fromOldRoot(testHeld(t)) {
		t.Error("a leaf-only chain was judged from the old root")
	}
}
