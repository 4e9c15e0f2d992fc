package oauth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/store"
)

// A display name or email that would forge lines or reorder text where
// it is shown (CLI, logs, post-mortems) is refused, at creation and at
// update (red team, stop 31: names took control characters).
func TestUserTextRefusesControlCharacters(t *testing.T) {
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := &oauth.Accounts{Store: st, Now: time.Now}
	ctx := context.Background()
	if _, err := a.CreateUser(ctx, store.OAuthUser{Username: "alice", Name: "Alice Example", Email: "alice@example.org"}, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"Alice\nroles: admin",           // a forged line
		"Alice\x1b[2J",                  // a terminal escape
		"Alice\r",                       // a carriage return
		"evil\u202egnp.exe",             // right-to-left override
		"isolate\u2066x\u2069",          // bidi isolate
		"line\u2028separator",           // Unicode line separator
		strings.Repeat("a", 257),        // too long
		string([]byte{0xff, 0xfe, 'a'}), // not UTF-8
	} {
		if _, err := a.CreateUser(ctx, store.OAuthUser{Username: "bob", Name: bad}, "correct horse battery"); !errors.Is(err, oauth.ErrInvalid) {
			t.Errorf("create with name %q: %v, want ErrInvalid", bad, err)
		}
		if _, err := a.UpdateUser(ctx, "alice", oauth.UserChange{Name: &bad}); !errors.Is(err, oauth.ErrInvalid) {
			t.Errorf("update to name %q: %v, want ErrInvalid", bad, err)
		}
		if _, err := a.UpdateUser(ctx, "alice", oauth.UserChange{Email: &bad}); !errors.Is(err, oauth.ErrInvalid) {
			t.Errorf("update to email %q: %v, want ErrInvalid", bad, err)
		}
	}
	ok := "Zoë Ünïcode-Name (SRE)"
	if _, err := a.UpdateUser(ctx, "alice", oauth.UserChange{Name: &ok}); err != nil {
		t.Errorf("a plain Unicode name refused: %v", err)
	}
	u, _ := st.GetOAuthUser(ctx, "alice")
	if u.Name != ok {
		t.Errorf("name %q", u.Name)
	}
}
