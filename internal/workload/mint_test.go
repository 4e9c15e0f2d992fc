package workload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// lazySource holds entries unminted until Mint is called for them.
type lazySource struct {
	staticSource
	mu     sync.Mutex
	calls  [][]string
	fail   error
	minted map[string]Identity // what Mint turns an unminted entry into
}

func (l *lazySource) Mint(_ context.Context, ids []string) error {
	l.mu.Lock()
	l.calls = append(l.calls, slices.Clone(ids))
	l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	snap, _ := l.Snapshot()
	next := *snap
	next.Unminted = nil
	next.Identities = slices.Clone(snap.Identities)
	for _, u := range snap.Unminted {
		if m, ok := l.minted[u.EntryID]; ok && slices.Contains(ids, u.EntryID) {
			next.Identities = append(next.Identities, m)
		} else {
			next.Unminted = append(next.Unminted, u)
		}
	}
	l.set(&next)
	return nil
}

func (l *lazySource) mintedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.calls {
		out = append(out, c...)
	}
	return out
}

// newLazy: the caller's entry (e1) and another uid's (e2), neither minted.
func newLazy(t *testing.T) *lazySource {
	full := twoWorkloads(t)
	l := &lazySource{minted: map[string]Identity{}}
	snap := &Snapshot{TrustDomain: full.TrustDomain, Bundle: full.Bundle, JWTBundle: full.JWTBundle}
	for _, id := range full.Identities {
		l.minted[id.EntryID] = id
		snap.Unminted = append(snap.Unminted, Identity{EntryID: id.EntryID, SpiffeID: id.SpiffeID, Selectors: id.Selectors})
	}
	l.snap, l.changed = snap, make(chan struct{})
	return l
}

// A first request mints the caller's SVID and only the caller's: a
// workload cannot make the agent mint (or hold keys for) another's.
func TestFirstRequestMintsOnlyTheCallers(t *testing.T) {
	src := newLazy(t)
	resp, err := fetch(t, serve(t, src))
	if err != nil || len(resp.SVIDs) != 1 || resp.SVIDs[0].ID != meID {
		t.Fatalf("first fetch: %v %v", resp, err)
	}
	// Mint is called again as the stream re-attests (use is recorded);
	// never with the other workload's entry.
	if got := src.mintedIDs(); !slices.Contains(got, "e1") || slices.Contains(got, "e2") {
		t.Fatalf("minted %v, want only the caller's e1", got)
	}
	// SDS mints the same way.
	src2 := newLazy(t)
	c := sdsClient(t, serve(t, src2))
	if _, err := c.FetchSecrets(context.Background(), sdsReq(SDSDefaultSVID)); err != nil {
		t.Fatal(err)
	}
	if got := src2.mintedIDs(); !slices.Contains(got, "e1") || slices.Contains(got, "e2") {
		t.Fatalf("SDS minted %v, want only e1", got)
	}
}

// A JWT-SVID needs the entry, not an X.509-SVID: nothing is minted.
func TestJWTSVIDMintsNothing(t *testing.T) {
	src := &jwtLazy{lazySource: newLazy(t)}
	sock := serve(t, src)
	c, conn := rawClient(t, sock)
	defer conn.Close()
	resp, err := c.FetchJWTSVID(withHeader(), &workload.JWTSVIDRequest{Audience: []string{"a"}})
	if err != nil || len(resp.Svids) != 1 || resp.Svids[0].SpiffeId != meID.String() {
		t.Fatalf("JWT-SVID: %v %v", resp, err)
	}
	if got := src.mintedIDs(); len(got) != 0 {
		t.Fatalf("a JWT-SVID request minted %v", got)
	}
}

type jwtLazy struct{ *lazySource }

func (j *jwtLazy) FetchJWTSVID(_ context.Context, entryID string, _ []string) (string, error) {
	if entryID != "e1" {
		return "", errors.New("wrong entry")
	}
	return "token", nil
}

// The server unreachable: the first request is told to retry.
func TestMintFailureIsUnavailable(t *testing.T) {
	src := newLazy(t)
	src.fail = errors.New("server unreachable")
	_, err := fetch(t, serve(t, src))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
}

// The scan gate runs before minting: a withheld identity is never minted.
func TestGatedIdentityNotMinted(t *testing.T) {
	src := newLazy(t)
	sock := serveWith(t, src, denyAll{})
	if _, err := fetch(t, sock); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gated: got %v, want PermissionDenied", err)
	}
	if got := src.mintedIDs(); len(got) != 0 {
		t.Fatalf("minted %v for a gated caller", got)
	}
}

type denyAll struct{}

func (denyAll) Inspect(_ context.Context, _ Executable, ids []Identity) ([]Identity, []Refusal) {
	var r []Refusal
	for _, id := range ids {
		r = append(r, Refusal{EntryID: id.EntryID, SpiffeID: id.SpiffeID.String(), Reason: "must be patched"})
	}
	return nil, r
}

func sdsReq(names ...string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{TypeUrl: SDSSecretType, ResourceNames: names}
}

func rawClient(t *testing.T, sock string) (workload.SpiffeWorkloadAPIClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return workload.NewSpiffeWorkloadAPIClient(conn), conn
}

func withHeader() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "workload.spiffe.io", "true")
}

// serveWith serves src with an inspector.
func serveWith(t *testing.T, src Source, in Inspector) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := NewServer(src, Attestor{}, nil, nil)
	srv.SetInspector(in)
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

// An entry's hint reaches the workload with its SVID (go-spiffe's Hint).
func TestHintReachesTheWorkload(t *testing.T) {
	snap := snapshotFor(t, uidSel())
	snap.Identities[0].Hint = "internal"
	resp, err := fetch(t, serve(t, &staticSource{snap: snap, changed: make(chan struct{})}))
	if err != nil || len(resp.SVIDs) != 1 || resp.SVIDs[0].Hint != "internal" {
		t.Fatalf("fetch: %v, hint %q", err, func() string {
			if err != nil || len(resp.SVIDs) == 0 {
				return ""
			}
			return resp.SVIDs[0].Hint
		}())
	}
}
