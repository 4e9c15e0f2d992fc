package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/rampartsec/rampart/internal/api"
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
	case kms.CallerError(err):
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
	api.WriteProblem(w, status, detail)
}

func (s *Server) handleCreateKMSKey(w http.ResponseWriter, r *http.Request) {
	var req api.KMSCreateKeyRequest
	if !api.ReadJSON(w, r, &req) {
		return
	}
	if req.RotateEverySeconds < 0 {
		api.WriteProblem(w, http.StatusBadRequest, "rotate_every_seconds: must not be negative")
		return
	}
	every, err := seconds("rotate_every_seconds", req.RotateEverySeconds)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	info, err := s.kms.Create(r.Context(), req.Name, req.Type, every)
	if err != nil {
		s.kmsError(w, r, "kms.key_create", err, "key", req.Name)
		return
	}
	s.event(r, "kms.key_create", "target", "kms:"+info.Name, "key", info.Name, "type", info.Type, "rotate_every", info.RotateEvery.String())
	api.WriteJSON(w, http.StatusCreated, kmsKeyToAPI(info))
}

func (s *Server) handleListKMSKeys(w http.ResponseWriter, r *http.Request) {
	infos, err := s.kms.List(r.Context())
	if err != nil {
		s.kmsError(w, r, "kms.key_list", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(infos, kmsKeyToAPI))
}

func (s *Server) handleGetKMSKey(w http.ResponseWriter, r *http.Request) {
	info, err := s.kms.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		status, detail := s.kmsProblem("kms.key_get", err)
		api.WriteProblem(w, status, detail)
		return
	}
	api.WriteJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

func (s *Server) handleRotateKMSKey(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	info, err := s.kms.Rotate(r.Context(), name)
	if err != nil {
		s.kmsError(w, r, "kms.rotate", err, "target", "kms:"+name, "key", name)
		return
	}
	s.event(r, "kms.rotate", "target", "kms:"+name, "key", name, "version", info.Latest, "trigger", "manual")
	api.WriteJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

func (s *Server) handleKMSVersion(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	n, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || n < 1 {
		api.WriteProblem(w, http.StatusBadRequest, "version: want a positive integer")
		return
	}
	var req api.KMSVersionRequest
	if r.ContentLength != 0 {
		if err := api.Decode(r, &req); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	grace, err := seconds("grace_seconds", req.GraceSeconds)
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
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
	api.WriteJSON(w, http.StatusOK, kmsKeyToAPI(info))
}

// kmsOp serves a key operation to a workload: the key-use policy decides
// (kms.Service.Do), and the use, allowed or not, is an audit entry,
// durable before the answer.
func (s *Server) kmsOp(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.KMSRequest
		if err := api.Decode(r, &req); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		res, e, err := s.kms.Do(r.Context(), s.kmsAccess, kms.Use{Caller: agentFrom(r), Key: r.PathValue("name"), Op: op, Plaintext: req.Plaintext,
			Ciphertext: req.Ciphertext, AAD: req.AAD, Message: req.Message, Signature: req.Signature, MAC: req.MAC}, s.now())
		e.Details["remote"] = r.RemoteAddr
		switch {
		case errors.Is(err, kms.ErrDenied):
			s.metrics.kmsOps.WithLabelValues(op, "denied").Inc()
			s.appendAudit(r.Context(), e)
			api.WriteProblem(w, http.StatusForbidden, err.Error())
		case err != nil:
			s.metrics.kmsOps.WithLabelValues(op, "error").Inc()
			s.appendAudit(r.Context(), e)
			status, detail := s.kmsProblem("kms."+op, err)
			api.WriteProblem(w, status, detail)
		default:
			s.metrics.kmsOps.WithLabelValues(op, "ok").Inc()
			if err := s.appendAudit(r.Context(), e); err != nil {
				api.WriteProblem(w, http.StatusServiceUnavailable, "the audit log cannot record this key use; refusing it")
				return
			}
			api.WriteJSON(w, http.StatusOK, api.KMSResponse{Version: res.Version, Plaintext: res.Plaintext, Ciphertext: res.Ciphertext,
				Signature: res.Signature, MAC: res.MAC, Valid: res.Valid})
		}
	}
}
