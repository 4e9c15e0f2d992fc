package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/kms"
	"github.com/rampartsec/rampart/internal/store"
)

func kmsKeyToAPI(in kms.Info) api.KMSKey {
	out := api.KMSKey{Name: in.Name, Type: in.Type, Latest: in.Latest, RotateEverySeconds: int64(in.RotateEvery / time.Second),
		CreatedAt: in.CreatedAt, RotatedAt: in.RotatedAt}
	for _, v := range in.Versions {
		av := api.KMSKeyVersion{Version: v.Version, State: v.State, CreatedAt: v.CreatedAt, PublicKey: v.PublicKey}
		if !v.DestroyAt.IsZero() {
			t := v.DestroyAt
			av.DestroyAt = &t
		}
		out.Versions = append(out.Versions, av)
	}
	return out
}

// kmsStatus maps key store errors onto HTTP statuses.
func kmsStatus(err error) int {
	switch {
	case errors.Is(err, kms.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, kms.ErrExists), errors.Is(err, kms.ErrDisabled), errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, kms.ErrInvalid), errors.Is(err, kms.ErrWrongType), errors.Is(err, kms.ErrDecrypt),
		errors.Is(err, kms.ErrMalformed), errors.Is(err, kms.ErrOtherKey):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// kmsProblem is the status and the detail shown for a key store error;
// internal errors are logged and not shown.
func (s *Server) kmsProblem(action string, err error) (int, string) {
	status := kmsStatus(err)
	if status == http.StatusInternalServerError {
		s.log.Error(action, "err", err)
		return status, "key store error"
	}
	return status, err.Error()
}

func (s *Server) kmsError(w http.ResponseWriter, r *http.Request, action string, err error, kv ...any) {
	status, detail := s.kmsProblem(action, err)
	s.refused(r, action, detail, kv...)
	writeProblem(w, status, detail)
}

func (s *Server) handleCreateKMSKey(w http.ResponseWriter, r *http.Request) {
	var req api.KMSCreateKeyRequest
	if err := decode(r, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.RotateEverySeconds < 0 {
		writeProblem(w, http.StatusBadRequest, "rotate_every_seconds: must not be negative")
		return
	}
	every, err := seconds("rotate_every_seconds", req.RotateEverySeconds)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	info, err := s.kms.Create(r.Context(), req.Name, req.Type, every)
	if err != nil {
		s.kmsError(w, r, "kms.key_create", err, "key", req.Name)
		return
	}
	s.event(r, "kms.key_create", "target", "kms:"+info.Name, "key", info.Name, "type", info.Type, "rotate_every", info.RotateEvery.String())
	writeJSON(w, http.StatusCreated, kmsKeyToAPI(info))
}

func (s *Server) handleListKMSKeys(w http.ResponseWriter, r *http.Request) {
	infos, err := s.kms.List(r.Context())
	if err != nil {
		s.kmsError(w, r, "kms.key_list", err)
		return
	}
	out := make([]api.KMSKey, 0, len(infos))
	for _, in := range infos {
		out = append(out, kmsKeyToAPI(in))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetKMSKey(w http.ResponseWriter, r *http.Request) {
	info, err := s.kms.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		status, detail := s.kmsProblem("kms.key_get", err)
		writeProblem(w, status, detail)
		return
	}
	writeJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

func (s *Server) handleRotateKMSKey(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	info, err := s.kms.Rotate(r.Context(), name)
	if err != nil {
		s.kmsError(w, r, "kms.rotate", err, "target", "kms:"+name, "key", name)
		return
	}
	s.event(r, "kms.rotate", "target", "kms:"+name, "key", name, "version", info.Latest, "trigger", "manual")
	writeJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

func (s *Server) handleKMSVersion(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	n, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || n < 1 {
		writeProblem(w, http.StatusBadRequest, "version: want a positive integer")
		return
	}
	var req api.KMSVersionRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			writeProblem(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	grace, err := seconds("grace_seconds", req.GraceSeconds)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	info, err := s.kms.SetState(r.Context(), name, n, action, grace)
	act := "kms.version_" + action
	if err != nil {
		s.kmsError(w, r, act, err, "target", "kms:"+name, "key", name, "version", n)
		return
	}
	kv := []any{"target", "kms:" + name, "key", name, "version", n}
	for _, v := range info.Versions {
		if v.Version == n && !v.DestroyAt.IsZero() {
			kv = append(kv, "destroy_at", v.DestroyAt)
		}
	}
	s.event(r, act, kv...)
	writeJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

// kmsOp wraps a key operation: the caller must present an SVID, and the
// key-use policy must allow it this operation on this key. Allowed or
// not, the use is an audit entry (caller, key, version, operation, sizes;
// never the data).
func (s *Server) kmsOp(op string) http.HandlerFunc {
	action := "kms." + op
	do := kmsDo[op]
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		caller := agentFrom(r)
		var req api.KMSRequest
		if err := decode(r, &req); err != nil {
			writeProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		e := &audit.Entry{V: audit.SchemaVersion, Time: s.now(), Action: action, Target: "kms:" + name, Source: "server",
			Actor: audit.Actor{SpiffeID: caller.String()},
			Details: map[string]string{"key": name, "remote": r.RemoteAddr,
				"size": strconv.Itoa(len(req.Plaintext) + len(req.Ciphertext) + len(req.Message))}}
		d := s.kmsAccess.Decide(caller, name, op)
		e.Details["policy_version"] = d.Version
		if d.Rule != "" {
			e.Details["rule"] = d.Rule
		}
		if d.DryRunDenied {
			e.Details["dry_run_denied"] = "true"
		}
		if !d.Allowed {
			e.Outcome, e.Reason = audit.OutcomeDenied, "no rule of the key-use policy allows "+op+" on this key"
			s.metrics.kmsOps.WithLabelValues(op, "denied").Inc()
			s.appendAudit(r.Context(), e)
			writeProblem(w, http.StatusForbidden, fmt.Sprintf("%s may not %s with key %q (key-use policy version %s)", caller, op, name, d.Version))
			return
		}
		resp, err := do(r.Context(), s.kms, name, &req)
		if err != nil {
			status, detail := s.kmsProblem(action, err)
			e.Outcome, e.Reason = audit.OutcomeFailure, detail
			s.metrics.kmsOps.WithLabelValues(op, "error").Inc()
			s.appendAudit(r.Context(), e)
			writeProblem(w, status, detail)
			return
		}
		e.Outcome = audit.OutcomeSuccess
		e.Details["version"] = strconv.Itoa(resp.Version)
		if resp.Valid != nil {
			e.Details["valid"] = strconv.FormatBool(*resp.Valid)
		}
		s.metrics.kmsOps.WithLabelValues(op, "ok").Inc()
		// Durable before the answer: a use the log does not have did not
		// happen.
		if err := s.appendAudit(r.Context(), e); err != nil {
			writeProblem(w, http.StatusServiceUnavailable, "the audit log cannot record this key use; refusing it")
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// kmsDo calls the key store for each operation.
var kmsDo = map[string]func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error){
	"encrypt": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		ct, v, err := svc.Encrypt(ctx, name, req.Plaintext, req.AAD)
		return api.KMSResponse{Version: v, Ciphertext: ct}, err
	},
	"decrypt": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		pt, v, err := svc.Decrypt(ctx, name, req.Ciphertext, req.AAD)
		return api.KMSResponse{Version: v, Plaintext: pt}, err
	},
	"datakey": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		pt, wrapped, v, err := svc.DataKey(ctx, name, req.AAD)
		return api.KMSResponse{Version: v, Plaintext: pt, Ciphertext: wrapped}, err
	},
	"rewrap": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		ct, v, err := svc.Rewrap(ctx, name, req.Ciphertext, req.AAD)
		return api.KMSResponse{Version: v, Ciphertext: ct}, err
	},
	"sign": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		sig, v, err := svc.Sign(ctx, name, req.Message)
		return api.KMSResponse{Version: v, Signature: sig}, err
	},
	"verify": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		ok, v, err := svc.Verify(ctx, name, req.Message, req.Signature)
		return api.KMSResponse{Version: v, Valid: &ok}, err
	},
	"hmac": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		tag, v, err := svc.MAC(ctx, name, req.Message)
		return api.KMSResponse{Version: v, MAC: tag}, err
	},
	"verify-hmac": func(ctx context.Context, svc *kms.Service, name string, req *api.KMSRequest) (api.KMSResponse, error) {
		ok, v, err := svc.VerifyMAC(ctx, name, req.Message, req.MAC)
		return api.KMSResponse{Version: v, Valid: &ok}, err
	},
}
