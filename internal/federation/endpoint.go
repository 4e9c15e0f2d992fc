package federation

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultRefreshHint is the spiffe_refresh_hint the endpoint serves when
// none is configured: how often other trust domains should fetch again.
const DefaultRefreshHint = 5 * time.Minute

// Authorities is what a trust domain's bundle holds now.
type Authorities struct {
	X509 []*x509.Certificate
	JWT  map[string]crypto.PublicKey
	// Sequence grows with every change of the authorities
	// (spiffe_sequence).
	Sequence uint64
}

// Endpoint serves this trust domain's bundle at GET / (the bundle
// endpoint of SPIFFE Federation §5). It is public: a bundle holds only
// public keys, and whoever federates with us must be able to read it.
type Endpoint struct {
	TrustDomain spiffeid.TrustDomain
	Bundle      func() (Authorities, error)
	RefreshHint time.Duration // 0: DefaultRefreshHint
	Log         *slog.Logger
}

func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	a, err := e.Bundle()
	hint := e.RefreshHint
	if hint <= 0 {
		hint = DefaultRefreshHint
	}
	var doc []byte
	if err == nil {
		doc, err = Document(e.TrustDomain, a.X509, a.JWT, a.Sequence, hint)
	}
	if err != nil {
		if e.Log != nil {
			e.Log.Error("serving the federation bundle failed", "err", err)
		}
		http.Error(w, "the bundle is not available", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(doc)
}

// SPIFFEServerTLS is the TLS configuration of an https_spiffe bundle
// endpoint: it presents cert, an X.509-SVID of this trust domain, and asks
// for no client certificate.
func SPIFFEServerTLS(cert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: cert}
}

// WebServerTLS is the TLS configuration of an https_web bundle endpoint:
// it presents the certificate chain and key of certFile and keyFile (PEM),
// read again when either file changes, so a renewed certificate is served
// without a restart.
func WebServerTLS(certFile, keyFile string) (*tls.Config, error) {
	kp := &keyPairFiles{cert: certFile, key: keyFile}
	if _, err := kp.get(nil); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: kp.get}, nil
}

type keyPairFiles struct {
	cert, key string

	mu      sync.Mutex
	modTime [2]time.Time
	current *tls.Certificate
}

func (k *keyPairFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var mt [2]time.Time
	for i, p := range []string{k.cert, k.key} {
		fi, err := os.Stat(p)
		if err != nil {
			return k.fallback(fmt.Errorf("federation: https_web certificate: %w", err))
		}
		mt[i] = fi.ModTime()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current != nil && mt == k.modTime {
		return k.current, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.current != nil {
			return k.current, nil // half-written renewal: serve the last good pair
		}
		return nil, fmt.Errorf("federation: https_web certificate %s and key %s: %w", k.cert, k.key, err)
	}
	k.current, k.modTime = &c, mt
	return k.current, nil
}

func (k *keyPairFiles) fallback(err error) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.current != nil {
		return k.current, nil
	}
	return nil, err
}
