package server

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

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

// found answers a store error: none (true), not found (404, missing), or
// the store's (500, logged).
func (s *Server) found(w http.ResponseWriter, err error, missing string) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, missing)
	default:
		s.internalError(w, err)
	}
	return false
}

func (s *Server) internalError(w http.ResponseWriter, err error) { api.InternalError(w, s.log, err) }
