package server

import (
	"errors"
	"net/http"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/store"
)

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
