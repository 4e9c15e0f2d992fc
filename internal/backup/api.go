package backup

import (
	"net/http"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
)

// The backup API (admin): make a backup now, run a drill now, list the
// backups. The server's route table puts each behind its permission; on a
// server without backups (a nil *Runner) each answers 404.

func (r *Runner) configured(w http.ResponseWriter) bool {
	if r == nil {
		api.WriteProblem(w, http.StatusNotFound, "backups are not configured on this server (rampart server --backup-config FILE)")
		return false
	}
	return true
}

func (r *Runner) operator(req *http.Request) audit.Actor {
	if r.Operator == nil {
		return audit.Actor{User: "admin"}
	}
	return r.Operator(req)
}

// HandleCreate serves POST /v1/backups.
func (r *Runner) HandleCreate(w http.ResponseWriter, req *http.Request) {
	if !r.configured(w) {
		return
	}
	res, err := r.CreateNow(req.Context(), r.operator(req))
	if err != nil {
		api.WriteProblem(w, http.StatusBadGateway, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, res)
}

// HandleDrill serves POST /v1/backups/drill.
func (r *Runner) HandleDrill(w http.ResponseWriter, req *http.Request) {
	if !r.configured(w) {
		return
	}
	api.WriteJSON(w, http.StatusOK, r.DrillNow(req.Context(), r.operator(req)))
}

// HandleList serves GET /v1/backups.
func (r *Runner) HandleList(w http.ResponseWriter, req *http.Request) {
	if !r.configured(w) {
		return
	}
	v, err := ParseVerifier(r.Backuper.PublicKey())
	if err != nil {
		api.InternalError(w, r.Log, err)
		return
	}
	list, err := List(req.Context(), Source{Destinations: r.Backuper.Destinations(), Verifier: v})
	if err != nil {
		api.WriteProblem(w, http.StatusBadGateway, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, list)
}
