package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// API serves the key store over HTTP: the admin endpoints (keys and
// versions, each change an audit entry) and the workloads' key
// operations (Use). The server's route table puts each behind its check:
// kms.read and kms.admin for the admin endpoints, an SVID for Use.
type API struct {
	Service *Service
	Access  *Access
	// Caller is the workload the request's SVID proved.
	Caller func(*http.Request) spiffeid.ID
	// Append writes audit entries durably; Event and Refused record an
	// admin action or a refusal, naming the caller the request proved.
	Append  func(ctx context.Context, es ...*audit.Entry) error
	Event   func(r *http.Request, action string, kv ...any)
	Refused func(r *http.Request, action, reason string, kv ...any)
	Now     func() time.Time
	Log     *slog.Logger

	ops *prometheus.CounterVec
}

// NewAPI returns a with its metrics registered in reg.
func NewAPI(a API, reg prometheus.Registerer) *API {
	a.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rampart_server_kms_operations_total", Help: "Key store operations, by operation and result (ok, denied, error).",
	}, []string{"operation", "result"})
	reg.MustRegister(a.ops)
	return &a
}

// maxSeconds is the most seconds a time.Duration holds.
const maxSeconds = math.MaxInt64 / int64(time.Second)

// seconds converts a request's count of seconds, refusing one whose
// nanoseconds do not fit a time.Duration: they would wrap around, to a
// negative duration or to one nobody asked for.
func seconds(field string, v int64) (time.Duration, error) {
	if v > maxSeconds || v < -maxSeconds {
		return 0, fmt.Errorf("%s: at most %d", field, maxSeconds)
	}
	return time.Duration(v) * time.Second, nil
}

// KeyToAPI is a key as the API and the CLI show it (never key material).
func KeyToAPI(in Info) api.KMSKey {
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

// status maps key store errors onto HTTP statuses.
func status(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExists), errors.Is(err, ErrDisabled), errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case CallerError(err):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// problem is the status and the detail shown for a key store error;
// internal errors are logged and not shown.
func (a *API) problem(action string, err error) (int, string) {
	st := status(err)
	if st == http.StatusInternalServerError {
		a.Log.Error(action, "err", err)
		return st, "key store error"
	}
	return st, err.Error()
}

// fail answers err and records the refusal.
func (a *API) fail(w http.ResponseWriter, r *http.Request, action string, err error, kv ...any) {
	st, detail := a.problem(action, err)
	a.Refused(r, action, detail, kv...)
	api.WriteProblem(w, st, detail)
}

// HandleCreate serves POST /v1/kms/keys.
func (a *API) HandleCreate(w http.ResponseWriter, r *http.Request) {
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
	info, err := a.Service.Create(r.Context(), req.Name, req.Type, every)
	if err != nil {
		a.fail(w, r, "kms.key_create", err, "key", req.Name)
		return
	}
	a.Event(r, "kms.key_create", "target", "kms:"+info.Name, "key", info.Name, "type", info.Type, "rotate_every", info.RotateEvery.String())
	api.WriteJSON(w, http.StatusCreated, KeyToAPI(info))
}

// HandleList serves GET /v1/kms/keys.
func (a *API) HandleList(w http.ResponseWriter, r *http.Request) {
	infos, err := a.Service.List(r.Context())
	if err != nil {
		a.fail(w, r, "kms.key_list", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.MapAll(infos, KeyToAPI))
}

// HandleGet serves GET /v1/kms/keys/{name}.
func (a *API) HandleGet(w http.ResponseWriter, r *http.Request) {
	info, err := a.Service.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		status, detail := a.problem("kms.key_get", err)
		api.WriteProblem(w, status, detail)
		return
	}
	api.WriteJSON(w, http.StatusOK, KeyToAPI(info))
}

// HandleRotate serves POST /v1/kms/keys/{name}/rotate.
func (a *API) HandleRotate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	info, err := a.Service.Rotate(r.Context(), name)
	if err != nil {
		a.fail(w, r, "kms.rotate", err, "target", "kms:"+name, "key", name)
		return
	}
	a.Event(r, "kms.rotate", "target", "kms:"+name, "key", name, "version", info.Latest, "trigger", "manual")
	api.WriteJSON(w, http.StatusOK, KeyToAPI(info))
}

// HandleVersion serves POST /v1/kms/keys/{name}/versions/{version}/{action}.
func (a *API) HandleVersion(w http.ResponseWriter, r *http.Request) {
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
	info, err := a.Service.SetState(r.Context(), name, n, action, grace)
	act := "kms.version_" + action
	if err != nil {
		a.fail(w, r, act, err, "target", "kms:"+name, "key", name, "version", n)
		return
	}
	kv := []any{"target", "kms:" + name, "key", name, "version", n}
	for _, v := range info.Versions {
		if v.Version == n && !v.DestroyAt.IsZero() {
			kv = append(kv, "destroy_at", v.DestroyAt)
		}
	}
	a.Event(r, act, kv...)
	api.WriteJSON(w, http.StatusOK, KeyToAPI(info))
}

// Use serves a key operation to a workload (POST
// /v1/kms/keys/{name}/OP): the key-use policy decides (Service.Do), and
// the use, allowed or not, is an audit entry, durable before the answer.
func (a *API) Use(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.KMSRequest
		if err := api.Decode(r, &req); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		res, e, err := a.Service.Do(r.Context(), a.Access, Use{Caller: a.Caller(r), Key: r.PathValue("name"), Op: op, Plaintext: req.Plaintext,
			Ciphertext: req.Ciphertext, AAD: req.AAD, Message: req.Message, Signature: req.Signature, MAC: req.MAC}, a.Now())
		e.Details["remote"] = r.RemoteAddr
		switch {
		case errors.Is(err, ErrDenied):
			a.ops.WithLabelValues(op, "denied").Inc()
			a.Append(r.Context(), e)
			api.WriteProblem(w, http.StatusForbidden, err.Error())
		case err != nil:
			a.ops.WithLabelValues(op, "error").Inc()
			a.Append(r.Context(), e)
			st, detail := a.problem("kms."+op, err)
			api.WriteProblem(w, st, detail)
		default:
			a.ops.WithLabelValues(op, "ok").Inc()
			if err := a.Append(r.Context(), e); err != nil {
				api.WriteProblem(w, http.StatusServiceUnavailable, "the audit log cannot record this key use; refusing it")
				return
			}
			api.WriteJSON(w, http.StatusOK, api.KMSResponse{Version: res.Version, Plaintext: res.Plaintext, Ciphertext: res.Ciphertext,
				Signature: res.Signature, MAC: res.MAC, Valid: res.Valid})
		}
	}
}
