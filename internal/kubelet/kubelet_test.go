package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	podUID     = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	appID      = "c0ffee0000000000000000000000000000000000000000000000000000a1b2c3"
	sidecarID  = "d00d111111111111111111111111111111111111111111111111111111e4f5a6"
	initID     = "beef222222222222222222222222222222222222222222222222222222070809"
	otherPod   = "7f1c2e3d-4a5b-4c6d-8e7f-901a2b3c4d5e"
	kubeletTok = "eyJhbGciOiJSUzI1NiJ9.kubelet-test-token.sig"
)

// kubeletServer serves the recorded /pods answer over TLS to a caller
// with the token, as a kubelet's authenticated port does.
func kubeletServer(t *testing.T, body []byte) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(kubeletTok)) != 1 {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/redirect/pods" {
			http.Redirect(w, r, "http://127.0.0.1:1/pods", http.StatusFound)
			return
		}
		if r.URL.Path != "/pods" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "kubelet-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, ca
}

// selfSignedCA writes a CA certificate the test kubelet's does not
// chain to.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeToken(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func recorded(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/pods.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestContainer(t *testing.T) {
	srv, ca := kubeletServer(t, recorded(t))
	c, err := New(Config{URL: srv.URL, CAFile: ca, TokenFile: writeToken(t, kubeletTok)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ id, name string }{{appID, "app"}, {sidecarID, "sidecar"}, {initID, "migrate"}} {
		pod, name, err := c.Container(ctx, podUID, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if name != tc.name || pod.Namespace != "shop" || pod.Name != "orders-7d9f8b6c5-xk2pq" || pod.ServiceAccount != "orders" ||
			pod.NodeName != "node-1" || pod.Labels["app.kubernetes.io/name"] != "orders" {
			t.Fatalf("%s: got %q %+v", tc.id, name, pod)
		}
	}
	// Attack: a caller in one pod's cgroup naming another pod's container
	// (or a pod UID it is not in) gets nothing.
	for _, tc := range []struct{ uid, id string }{{otherPod, appID}, {podUID, strings.Repeat("a", 64)}, {"00000000-0000-0000-0000-000000000000", appID}} {
		if _, _, err := c.Container(ctx, tc.uid, tc.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("pod %s container %s: err = %v, want ErrNotFound", tc.uid, tc.id, err)
		}
	}
}

func TestRefusals(t *testing.T) {
	srv, ca := kubeletServer(t, recorded(t))
	otherCA := selfSignedCA(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"wrong token", Config{URL: srv.URL, CAFile: ca, TokenFile: writeToken(t, "wrong")}, "401"},
		// Attack: something else listening on the kubelet's port (or a
		// man in the middle) without a certificate from the CA.
		{"kubelet certificate from another CA", Config{URL: srv.URL, CAFile: otherCA, TokenFile: writeToken(t, kubeletTok)}, "certificate"},
		{"token file missing", Config{URL: srv.URL, CAFile: ca, TokenFile: "/nonexistent/token"}, "token"},
		{"token file with two tokens", Config{URL: srv.URL, CAFile: ca, TokenFile: writeToken(t, "a b")}, "one token"},
		// Attack: a redirect would carry the bearer token elsewhere.
		{"redirect", Config{URL: srv.URL + "/redirect", CAFile: ca, TokenFile: writeToken(t, kubeletTok)}, "redirect refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Pods(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	for _, cfg := range []Config{{URL: "http://127.0.0.1:10255", CAFile: ca}, {URL: srv.URL}, {URL: srv.URL, CAFile: "/nonexistent"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestParsePodList(t *testing.T) {
	pods, err := ParsePodList(recorded(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 || len(pods[0].Containers) != 3 || len(pods[1].Containers) != 0 {
		t.Fatalf("pods: %+v", pods)
	}
	for _, tc := range []struct{ name, body, wantErr string }{
		{"not json", "<html>", "invalid character"},
		{"another kind", `{"kind":"Status","items":[]}`, "kind"},
		{"pod without uid", `{"kind":"List","items":[{"metadata":{"name":"x"}}]}`, "no UID"},
		// Attack: one container claimed by two pods makes the owner
		// ambiguous; refused rather than first-wins.
		{"container in two pods", `{"kind":"List","items":[
			{"metadata":{"uid":"a"},"status":{"containerStatuses":[{"name":"x","containerID":"containerd://` + appID + `"}]}},
			{"metadata":{"uid":"b"},"status":{"containerStatuses":[{"name":"y","containerID":"cri-o://` + appID + `"}]}}]}`, "listed in pods"},
	} {
		if _, err := ParsePodList([]byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func FuzzParsePodList(f *testing.F) {
	f.Add(recorded(f))
	f.Add([]byte(`{"kind":"PodList","items":[{"metadata":{"uid":"a"},"status":{"containerStatuses":[{"name":"x","containerID":"containerd://abc"}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pods, err := ParsePodList(b)
		if err != nil {
			return
		}
		owner := map[string]string{}
		for _, p := range pods {
			if p.UID == "" || p.ServiceAccount == "" {
				t.Fatalf("pod %+v", p)
			}
			for id := range p.Containers {
				if id == "" {
					t.Fatalf("container id %q", id)
				}
				if o, ok := owner[id]; ok && o != p.UID {
					t.Fatalf("container %s in %s and %s", id, o, p.UID)
				}
				owner[id] = p.UID
			}
		}
	})
}
