package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
)

// The server's side of the contract: how handlers (in package server and
// in the packages that serve their own endpoints) read requests and write
// answers.

// MaxBody bounds a JSON request body.
const MaxBody = 1 << 20

// WriteProblem answers with an RFC 9457 problem details body. detail is
// shown to the client, so it must never carry secrets or policy internals.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Decode reads a JSON body strictly: unknown fields, trailing data and
// bodies over MaxBody are errors naming what was wrong.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body larger than %d bytes", MaxBody)
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

// ReadJSON decodes r's body into v (Decode), answering 400 when it cannot.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := Decode(r, v); err != nil {
		WriteProblem(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// MapAll converts every element of xs with f (an empty list, never null).
func MapAll[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

// InternalError logs err (never shown to the client) and answers 500.
func InternalError(w http.ResponseWriter, log *slog.Logger, err error) {
	log.Error("store error", "err", err)
	WriteProblem(w, http.StatusInternalServerError, "the store failed; see the server log")
}
