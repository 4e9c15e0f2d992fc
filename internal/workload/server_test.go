package workload

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rampartsec/rampart/internal/selector"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// staticSource is a plain-value Source: a snapshot that can be replaced.
type staticSource struct {
	mu      sync.Mutex
	snap    *Snapshot
	changed chan struct{}
}

func (s *staticSource) Snapshot() (*Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap, s.changed
}

func (s *staticSource) set(snap *Snapshot) {
	s.mu.Lock()
	s.snap = snap
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *staticSource) FetchJWTSVID(context.Context, string, []string) (string, error) {
	return "", io.EOF
}

// selfSigned returns a throwaway root and an SVID signed by it.
func selfSigned(t *testing.T, id spiffeid.ID) (root *x509.Certificate, leaf *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	rd, _ := x509.CreateCertificate(rand.Reader, rt, rt, rk.Public(), rk)
	root, _ = x509.ParseCertificate(rd)
	key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()}, BasicConstraintsValid: true}
	ld, _ := x509.CreateCertificate(rand.Reader, lt, root, key.Public(), rk)
	leaf, _ = x509.ParseCertificate(ld)
	return root, leaf, key
}

func serve(t *testing.T, src Source) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(sock, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { NewServer(src, Attestor{}, nil, nil).Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func snapshotFor(t *testing.T, sels ...selector.Selector) *Snapshot {
	id := spiffeid.RequireFromString("spiffe://example.org/me")
	root, leaf, key := selfSigned(t, id)
	return &Snapshot{TrustDomain: td, Bundle: []*x509.Certificate{root}, JWTBundle: []byte(`{"keys":[]}`),
		Identities: []Identity{{EntryID: "e1", SpiffeID: id, Selectors: sels, Chain: []*x509.Certificate{leaf}, Key: key}}}
}

func fetch(t *testing.T, sock string) (*workloadapi.X509Context, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+sock))
}

func uidSel() selector.Selector {
	return selector.Selector{Type: selector.UnixUID, Value: strconv.Itoa(os.Getuid())}
}

func TestAttestationDecides(t *testing.T) {
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	f, _ := os.Open(exe)
	h := sha256.New()
	io.Copy(h, f)
	f.Close()
	sum := hex.EncodeToString(h.Sum(nil))
	tests := []struct {
		name string
		sels []selector.Selector
		ok   bool
	}{
		{"my uid", []selector.Selector{uidSel()}, true},
		{"my uid and path", []selector.Selector{uidSel(), {Type: selector.UnixPath, Value: exe}}, true},
		{"my uid and my binary's hash", []selector.Selector{uidSel(), {Type: selector.UnixSHA256, Value: sum}}, true},
		// An entry with only a path or hash breaks the selector rule; one
		// stored before the rule is not served.
		{"my binary's hash alone", []selector.Selector{{Type: selector.UnixSHA256, Value: sum}}, false},
		{"my path alone", []selector.Selector{{Type: selector.UnixPath, Value: exe}}, false},
		{"another uid", []selector.Selector{{Type: selector.UnixUID, Value: "54321"}}, false},
		{"another path", []selector.Selector{uidSel(), {Type: selector.UnixPath, Value: "/usr/bin/not-me"}}, false},
		{"another hash", []selector.Selector{uidSel(), {Type: selector.UnixSHA256, Value: hex.EncodeToString(make([]byte, 32))}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := serve(t, &staticSource{snap: snapshotFor(t, tt.sels...), changed: make(chan struct{})})
			resp, err := fetch(t, sock)
			if tt.ok {
				if err != nil || len(resp.SVIDs) != 1 || resp.SVIDs[0].ID.String() != "spiffe://example.org/me" {
					t.Fatalf("entitled caller refused: %v", err)
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("got %v, want PermissionDenied", err)
			}
		})
	}
}

// The spec's security header: requests without it are refused.
func TestSecurityHeaderRequired(t *testing.T) {
	sock := serve(t, &staticSource{snap: snapshotFor(t, uidSel()), changed: make(chan struct{})})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no security header: got %v, want InvalidArgument", err)
	}
	_, err = c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no security header (unary): got %v, want InvalidArgument", err)
	}
}

// An open stream receives a new snapshot, and ends with PermissionDenied
// when the caller's last identity disappears.
func TestStreamFollowsChanges(t *testing.T) {
	src := &staticSource{snap: snapshotFor(t, uidSel()), changed: make(chan struct{})}
	sock := serve(t, src)
	client, err := workloadapi.New(context.Background(), workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	updates := make(chan *workloadapi.X509Context, 4)
	errs := make(chan error, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go client.WatchX509Context(ctx, watcher{updates, errs})
	first := <-updates
	src.set(snapshotFor(t, uidSel()))
	select {
	case second := <-updates:
		if second.SVIDs[0].Certificates[0].Equal(first.SVIDs[0].Certificates[0]) {
			t.Fatal("update carried the old certificate")
		}
	case <-ctx.Done():
		t.Fatal("no update after the snapshot changed")
	}
	src.set(snapshotFor(t, selector.Selector{Type: selector.UnixUID, Value: "54321"}))
	select {
	case err := <-errs:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("stream ended with %v, want PermissionDenied", err)
		}
	case <-ctx.Done():
		t.Fatal("stream kept going after the identity was withdrawn")
	}
}

type watcher struct {
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.updates <- c }
func (w watcher) OnX509ContextWatchError(err error)              { w.errs <- err }

func TestListenRefusesToReplaceAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-socket")
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(path, os.Geteuid()); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
}
