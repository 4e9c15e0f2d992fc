package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Refresh timing defaults.
const (
	// DefaultMinRefresh and DefaultMaxRefresh bound an endpoint's
	// spiffe_refresh_hint: a hint of one second does not make us fetch
	// every second, and one of a year does not leave a rotated bundle
	// unseen for a year.
	DefaultMinRefresh = 30 * time.Second
	DefaultMaxRefresh = time.Hour
	// DefaultRetry is how soon a failed fetch is tried again.
	DefaultRetry = 30 * time.Second
	// DefaultFetchTimeout bounds one fetch, connection to last byte.
	DefaultFetchTimeout = 10 * time.Second
)

// Relationship is one federated trust domain as the refresher sees it.
type Relationship struct {
	TrustDomain spiffeid.TrustDomain
	URL         string // the bundle endpoint, https
	Profile     Profile
	// EndpointID is the SPIFFE ID an https_spiffe endpoint must present.
	EndpointID spiffeid.ID
	// Bundle is the last bundle accepted (nil: none yet; an https_spiffe
	// relationship then cannot authenticate its endpoint).
	Bundle      *spiffebundle.Bundle
	NextRefresh time.Time
}

// Check says what is wrong with a relationship an operator configured.
// CheckName refuses trust domain names SPIFFE's syntax allows but no DNS
// name has: a trailing dot or an empty label. "a.example." reads as our
// "a.example" and is another trust domain to every comparison.
func CheckName(td spiffeid.TrustDomain) error {
	n := td.Name()
	if strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") || strings.Contains(n, "..") {
		return fmt.Errorf("federation: trust domain %q has an empty label (a leading, trailing or doubled dot)", n)
	}
	return nil
}

func (r Relationship) Check(own spiffeid.TrustDomain) error {
	if r.TrustDomain.IsZero() {
		return errors.New("federation: a trust domain is required")
	}
	if r.TrustDomain == own {
		return fmt.Errorf("federation: %s is this server's own trust domain", own)
	}
	if err := CheckName(r.TrustDomain); err != nil {
		return err
	}
	u, err := url.Parse(r.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fmt.Errorf("federation: bundle endpoint URL %q: want https://host[:port]/path, without credentials", r.URL)
	}
	switch r.Profile {
	case ProfileSPIFFE:
		if r.EndpointID.IsZero() {
			return errors.New("federation: https_spiffe needs the endpoint's SPIFFE ID")
		}
	case ProfileWeb:
		if !r.EndpointID.IsZero() {
			return errors.New("federation: an endpoint SPIFFE ID is for https_spiffe only")
		}
	default:
		return fmt.Errorf("federation: unknown profile %q (want https_spiffe or https_web)", r.Profile)
	}
	return nil
}

// Store is where the refresher reads relationships and records what it
// fetched.
type Store interface {
	Relationships(ctx context.Context) ([]Relationship, error)
	// Accept stores a new bundle of td (canonical JSON).
	Accept(ctx context.Context, td spiffeid.TrustDomain, doc []byte, at, next time.Time) error
	// Attempted records a fetch that failed (errText) or brought the
	// bundle already held (""), keeping the bundle.
	Attempted(ctx context.Context, td spiffeid.TrustDomain, at, next time.Time, errText string) error
}

// Outcomes of a refresh.
const (
	OutcomeUpdated   = "updated"
	OutcomeUnchanged = "unchanged"
	OutcomeFailed    = "failed"
)

// Result is what one refresh did.
type Result struct {
	TrustDomain spiffeid.TrustDomain
	Outcome     string
	Err         error                // OutcomeFailed
	Bundle      *spiffebundle.Bundle // the bundle fetched (nil on failure)
	Next        time.Time
}

// Refresher keeps the bundles of federated trust domains current.
type Refresher struct {
	TrustDomain spiffeid.TrustDomain // our own
	// Own returns our own roots: an https_spiffe endpoint may present an
	// SVID of this trust domain (a bundle served on another's behalf).
	Own   func() []*x509.Certificate
	Store Store
	// WebRoots verify https_web endpoints; nil: the system's roots.
	WebRoots                      *x509.CertPool
	MinRefresh, MaxRefresh, Retry time.Duration // 0: the defaults
	DefaultRefresh, FetchTimeout  time.Duration // 0: DefaultRefreshHint, DefaultFetchTimeout
	OnRefresh                     func(Result)  // audit and metrics; may be nil
	Now                           func() time.Time
	Log                           *slog.Logger

	once sync.Once
	kick chan struct{}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Interval is how long a bundle with this hint is kept before the next
// fetch: the hint (or the default without one), bounded.
func (r *Refresher) Interval(b *spiffebundle.Bundle) time.Duration {
	d := orDefault(r.DefaultRefresh, DefaultRefreshHint)
	if hint, ok := b.RefreshHint(); ok {
		d = hint
	}
	return min(max(d, orDefault(r.MinRefresh, DefaultMinRefresh)), orDefault(r.MaxRefresh, DefaultMaxRefresh))
}

func (r *Refresher) wake() chan struct{} {
	r.once.Do(func() { r.kick = make(chan struct{}, 1) })
	return r.kick
}

// Kick makes Run look at the relationships now (one was created or
// changed).
func (r *Refresher) Kick() {
	select {
	case r.wake() <- struct{}{}:
	default:
	}
}

// Run refreshes every relationship when due, until ctx ends.
func (r *Refresher) Run(ctx context.Context) error {
	kick := r.wake()
	for {
		next, err := r.RefreshDue(ctx)
		if err != nil && ctx.Err() == nil && r.Log != nil {
			r.Log.Error("federation: refreshing bundles failed", "err", err)
		}
		wait := max(next.Sub(r.Now()), time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-kick:
			t.Stop()
		}
	}
}

// RefreshDue fetches the bundle of every relationship due at Now and
// returns when the next one is due.
func (r *Refresher) RefreshDue(ctx context.Context) (time.Time, error) {
	now := r.Now()
	next := now.Add(orDefault(r.MaxRefresh, DefaultMaxRefresh))
	rels, err := r.Store.Relationships(ctx)
	if err != nil {
		return now.Add(orDefault(r.Retry, DefaultRetry)), fmt.Errorf("federation: %w", err)
	}
	// The bundles an https_spiffe endpoint's SVID is checked against:
	// ours and the last accepted one of each federated trust domain.
	known := x509bundle.NewSet()
	if r.Own != nil {
		known.Add(x509bundle.FromX509Authorities(r.TrustDomain, r.Own()))
	}
	for _, rel := range rels {
		if rel.Bundle != nil {
			known.Add(rel.Bundle.X509Bundle())
		}
	}
	var errs []error
	for _, rel := range rels {
		n := rel.NextRefresh
		if !n.After(now) {
			res := r.refresh(ctx, rel, known, now)
			if res.Err != nil {
				errs = append(errs, res.Err)
			}
			if res.Bundle != nil {
				known.Add(res.Bundle.X509Bundle())
			}
			n = res.Next
		}
		if n.Before(next) {
			next = n
		}
	}
	return next, errors.Join(errs...)
}

func (r *Refresher) refresh(ctx context.Context, rel Relationship, known *x509bundle.Set, now time.Time) Result {
	res := Result{TrustDomain: rel.TrustDomain}
	b, err := r.Fetch(ctx, rel, known)
	if err == nil && !SameAuthorities(rel.Bundle, b) {
		err = checkSequence(rel.Bundle, b)
	}
	if err == nil {
		res.Next = now.Add(r.Interval(b))
		if SameAuthorities(rel.Bundle, b) {
			res.Outcome = OutcomeUnchanged
			err = r.Store.Attempted(ctx, rel.TrustDomain, now, res.Next, "")
		} else {
			var doc []byte
			if doc, err = canonical(b); err == nil {
				res.Outcome = OutcomeUpdated
				err = r.Store.Accept(ctx, rel.TrustDomain, doc, now, res.Next)
			}
		}
		if err == nil {
			res.Bundle = b
		}
	}
	if err != nil {
		// Whatever failed, the bundle held stays: a failed fetch never
		// removes trust, and never adds any.
		res.Outcome, res.Err, res.Bundle = OutcomeFailed, err, nil
		res.Next = now.Add(min(orDefault(r.Retry, DefaultRetry), orDefault(r.MaxRefresh, DefaultMaxRefresh)))
		if serr := r.Store.Attempted(ctx, rel.TrustDomain, now, res.Next, err.Error()); serr != nil && r.Log != nil {
			r.Log.Error("federation: recording a failed fetch", "trust_domain", rel.TrustDomain.Name(), "err", serr)
		}
	}
	if r.OnRefresh != nil {
		r.OnRefresh(res)
	}
	return res
}

// checkSequence refuses a bundle older than the one held: one whose
// spiffe_sequence is lower, with other authorities. Served by a stale
// cache or replayed by whoever controls the endpoint, it could bring back
// a root the trust domain has removed (a compromised one, say). A trust
// domain that really restarted its numbering is taken by an operator
// (rampart federation update --bundle-file).
func checkSequence(held, got *spiffebundle.Bundle) error {
	if held == nil {
		return nil
	}
	h, ok1 := held.SequenceNumber()
	g, ok2 := got.SequenceNumber()
	if ok1 && ok2 && g < h {
		return fmt.Errorf("federation: the bundle of %s went back from spiffe_sequence %d to %d with other authorities: refused as a stale or replayed bundle (if %s restarted its numbering, set the bundle with rampart federation update --bundle-file)",
			got.TrustDomain().Name(), h, g, got.TrustDomain().Name())
	}
	return nil
}

// errRedirect: bundle endpoints are fetched where configured, never
// where a response points.
var errRedirect = errors.New("federation: the bundle endpoint answered with a redirect; configure its final URL")

// Fetch reads rel's bundle from its endpoint, authenticating the endpoint
// as its profile says (known: the bundles an https_spiffe endpoint's SVID
// may chain to), and checks the bundle (ParseBundle).
func (r *Refresher) Fetch(ctx context.Context, rel Relationship, known x509bundle.Source) (*spiffebundle.Bundle, error) {
	if err := rel.Check(r.TrustDomain); err != nil {
		return nil, err
	}
	var cfg *tls.Config
	switch rel.Profile {
	case ProfileSPIFFE:
		if _, err := known.GetX509BundleForTrustDomain(rel.EndpointID.TrustDomain()); err != nil {
			return nil, fmt.Errorf("federation: no bundle of %s is held to authenticate the endpoint %s; give the relationship a first bundle (--bundle-file)", rel.EndpointID.TrustDomain(), rel.EndpointID)
		}
		cfg = tlsconfig.TLSClientConfig(known, tlsconfig.AuthorizeID(rel.EndpointID))
	case ProfileWeb:
		cfg = &tls.Config{RootCAs: r.WebRoots}
	}
	cfg.MinVersion = tls.VersionTLS13
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true,
		MaxResponseHeaderBytes: 64 << 10, TLSHandshakeTimeout: orDefault(r.FetchTimeout, DefaultFetchTimeout)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: orDefault(r.FetchTimeout, DefaultFetchTimeout),
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rel.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("federation: %s: %w", rel.URL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("federation: fetch the bundle of %s from %s (%s): %w", rel.TrustDomain, rel.URL, rel.Profile, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("federation: fetch the bundle of %s from %s: %s", rel.TrustDomain, rel.URL, resp.Status)
	}
	doc, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("federation: read the bundle of %s from %s: %w", rel.TrustDomain, rel.URL, err)
	}
	return ParseBundle(rel.TrustDomain, doc)
}
