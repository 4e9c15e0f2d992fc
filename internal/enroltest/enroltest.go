// Package enroltest gives tests and benchmarks a workload SVID from a
// running server the way a real workload gets one, without running an
// agent: it enrols an agent with a join token, registers the workload under
// it, and has the agent sign the workload's CSR through the agent API.
package enroltest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"

	"github.com/rampartsec/rampart/internal/api"
)

// CSR returns a new P-256 key and a certificate request for it, naming
// the SPIFFE ID id ("" for an agent, whose ID the server assigns).
func CSR(id string) (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{}
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			return nil, nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	return k, der, err
}

// Workload enrols an agent named agent (admin must carry the admin token;
// trust verifies the server) and returns a TLS certificate holding an SVID
// for id issued through it. The entry's selector is a fixed uid: no real
// process is attested.
func Workload(ctx context.Context, admin *api.Client, trust *tls.Config, agent, id string) (*tls.Certificate, error) {
	var jt api.CreateJoinTokenResponse
	if err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", api.CreateJoinTokenRequest{AgentName: agent}, &jt); err != nil {
		return nil, fmt.Errorf("enroltest: join token: %w", err)
	}
	akey, acsr, err := CSR("")
	if err != nil {
		return nil, err
	}
	anon := &api.Client{BaseURL: admin.BaseURL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: trust}}}
	var att api.AttestResponse
	if err := anon.Do(ctx, http.MethodPost, "/v1/agent/attest", api.AttestRequest{JoinToken: jt.Token, CSR: acsr}, &att); err != nil {
		return nil, fmt.Errorf("enroltest: attest: %w", err)
	}
	cfg := trust.Clone()
	cfg.Certificates = []tls.Certificate{{Certificate: att.SVID.Chain, PrivateKey: akey}}
	agentClient := &api.Client{BaseURL: admin.BaseURL, HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}}
	var e api.Entry
	if err := admin.Do(ctx, http.MethodPost, "/v1/entries", api.Entry{SpiffeID: id, ParentID: jt.AgentID, Selectors: []string{"unix:uid:4242"}}, &e); err != nil {
		return nil, fmt.Errorf("enroltest: entry: %w", err)
	}
	wkey, wcsr, err := CSR(id)
	if err != nil {
		return nil, err
	}
	var sr api.SignResponse
	if err := agentClient.Do(ctx, http.MethodPost, "/v1/agent/svids", api.SignRequest{Requests: []api.SignItem{{EntryID: e.ID, CSR: wcsr}}}, &sr); err != nil {
		return nil, fmt.Errorf("enroltest: sign: %w", err)
	}
	if len(sr.Results) != 1 || sr.Results[0].SVID == nil {
		return nil, fmt.Errorf("enroltest: no SVID issued for %s: %+v", id, sr.Results)
	}
	return &tls.Certificate{Certificate: sr.Results[0].SVID.Chain, PrivateKey: wkey}, nil
}
