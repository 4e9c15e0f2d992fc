package server

import (
	"errors"
	"net/http"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/audit/intake"
)

// handleIngest appends a batch from an agent's or proxy's spool (package
// intake decides what it may say). The answer comes only after the
// entries are durable.
func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	caller := agentFrom(r)
	ack, err := s.intake.Take(r.Context(), intake.Batch{Caller: caller,
		Body: http.MaxBytesReader(nil, r.Body, intake.MaxBatchBytes), ContentType: r.Header.Get("Content-Type"),
		Refused: func(reason string, kv ...any) []*audit.Entry {
			return s.refusals.Add(s.entry(r, "audit.ingest", audit.OutcomeDenied, reason, kv...), caller.String())
		}})
	var ref *intake.RefusedError
	if errors.As(err, &ref) {
		if ref.Reason != "" {
			s.refused(r, "audit.ingest", ref.Reason, ref.Details...)
		}
		api.WriteProblem(w, ingestStatus[ref.Kind], ref.Detail)
		return
	}
	if err != nil {
		s.internalError(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, api.AuditIngestResponse{Stream: ack.Stream, AckedThrough: ack.Through})
}

var ingestStatus = map[error]int{
	intake.ErrMalformed: http.StatusBadRequest, intake.ErrMediaType: http.StatusUnsupportedMediaType,
	intake.ErrNotShipper: http.StatusForbidden, intake.ErrNotOwner: http.StatusForbidden,
	intake.ErrStreamLimit: http.StatusTooManyRequests, intake.ErrUnavailable: http.StatusServiceUnavailable,
}
