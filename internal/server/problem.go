package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

const maxBody = 1 << 20

// writeProblem answers with an RFC 9457 problem details body. detail is shown
// to the client, so it must never carry secrets or policy internals.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readJSON decodes r's body into v (decode), answering 400 when it
// cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := decode(r, v); err != nil {
		writeProblem(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// decode reads a JSON body strictly: unknown fields, trailing data and bodies
// over 1 MiB are errors naming what was wrong.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body larger than %d bytes", maxBody)
		case errors.As(err, &ute):
			return fmt.Errorf("field %q: want %s, got JSON %s", ute.Field, ute.Type, ute.Value)
		case errors.Is(err, io.EOF):
			return errors.New("empty request body; want a JSON object")
		}
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	if dec.More() {
		return errors.New("invalid JSON body: data after the object")
	}
	return nil
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

// mapAll converts every element of xs with f (an empty list, never null).
func mapAll[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// found answers a store error: none (true), not found (404, missing), or
// the store's (500, logged).
func (s *Server) found(w http.ResponseWriter, err error, missing string) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, missing)
	default:
		s.internalError(w, err)
	}
	return false
}
