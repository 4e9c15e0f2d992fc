package server

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/rekey"
)

// rekeyEvery is how often the server advances a burn-down in progress
// (its waits: propagation, re-issue, deadline).
const rekeyEvery = 2 * time.Second

// newRekeyer wires the burn-down (package rekey) to the server's parts.
// Its state lives in DATA/rekey: the replica that runs a burn-down is the
// one that finishes it.
func (s *Server) newRekeyer() (*rekey.Rekeyer, error) {
	actor := audit.Actor{SpiffeID: identity.ServerID(s.cfg.TrustDomain).String()}
	return rekey.New(rekey.Config{
		Dir: filepath.Join(s.cfg.DataDir, "rekey"), CA: s.ca, Tokens: serverTokens{s}, Clients: s.store, KMS: s.kmsAPI.Service, SVIDs: s.store,
		RenewServerCert: s.cert.Renew,
		Changed: func(ctx context.Context) {
			if err := s.kmsAPI.Service.Reload(ctx); err != nil {
				s.log.Error("reloading key store keys failed", "err", err)
			}
			s.notify(ctx)
		},
		Record: func(ctx context.Context, action, outcome string, details map[string]string) {
			e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: action, Outcome: outcome, Source: "server", Actor: actor,
				Target: "rekey:" + details["rekey_id"], Details: details}
			if outcome != audit.OutcomeSuccess {
				e.Reason = details["error"]
			}
			s.record(ctx, e)
		},
		Now: s.now, Log: s.log,
	})
}

// serverTokens hands the OAuth provider to package rekey; the provider
// starts after the rekeyer (it needs the listen address).
type serverTokens struct{ s *Server }

var errNoOAuth = errors.New("server: the OAuth provider is not running")

func (t serverTokens) RekeySigningKey(ctx context.Context, dropOld bool) ([]string, string, error) {
	if t.s.oauth == nil {
		return nil, "", errNoOAuth
	}
	return t.s.oauth.RekeySigningKey(ctx, dropOld)
}

func (t serverTokens) DropSigningKeys(ctx context.Context, ids []string) ([]string, error) {
	if t.s.oauth == nil {
		return nil, errNoOAuth
	}
	return t.s.oauth.DropSigningKeys(ctx, ids)
}

func (t serverTokens) RevokeClient(ctx context.Context, clientID, reason string) (int, error) {
	if t.s.oauth == nil {
		return 0, errNoOAuth
	}
	return t.s.oauth.RevokeClient(ctx, clientID, reason)
}

func (t serverTokens) JWKS() jose.JSONWebKeySet {
	if t.s.oauth == nil {
		return jose.JSONWebKeySet{}
	}
	return t.s.oauth.JWKS()
}

// runRekey advances a burn-down in progress every rekeyEvery.
func (s *Server) runRekey(ctx context.Context) error {
	t := time.NewTicker(rekeyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if st, err := s.rekey.Current(); err != nil || st.Phase != rekey.PhaseRunning {
			continue
		}
		// A failed step is logged and audited by the rekeyer, once per
		// distinct error, and retried at the next tick.
		s.rekey.Step(ctx)
	}
}

func (s *Server) handleRekey(w http.ResponseWriter, r *http.Request) {
	var opts rekey.Options
	if !api.ReadJSON(w, r, &opts) {
		return
	}
	st, err := s.rekey.Run(r.Context(), opts)
	if errors.Is(err, rekey.ErrInvalid) {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if opts.DryRun {
		if err != nil {
			s.internalError(w, err)
			return
		}
		s.event(r, "rekey.dry_run", "target", "rekey")
		api.WriteJSON(w, http.StatusOK, st)
		return
	}
	if err != nil && st.ID == "" {
		s.internalError(w, err)
		return
	}
	s.event(r, "rekey.request", "target", "rekey:"+st.ID, "rekey_id", st.ID, "revoke_tokens", opts.RevokeTokens)
	// A failed step is not a failed request: the state names the step
	// and its error, and the next request (or the server's loop) resumes.
	api.WriteJSON(w, http.StatusOK, st)
}

func (s *Server) handleRekeyStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.rekey.Current()
	if errors.Is(err, rekey.ErrNone) {
		api.WriteProblem(w, http.StatusNotFound, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, st)
}

func (s *Server) handleRekeyFinish(w http.ResponseWriter, r *http.Request) {
	st, err := s.rekey.Finish(r.Context())
	if errors.Is(err, rekey.ErrNotRunning) {
		api.WriteProblem(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil && st.ID == "" {
		s.internalError(w, err)
		return
	}
	s.event(r, "rekey.finish_request", "target", "rekey:"+st.ID, "rekey_id", st.ID)
	api.WriteJSON(w, http.StatusOK, st)
}
