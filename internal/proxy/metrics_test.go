package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Requests net/http serves (HTTP/2 and gRPC) are counted by their final
// status, as the HTTP/1.1 forwarder counts its own: an Early Hints answer
// before a 200 is one 200, not a 103.
func TestInstrumentCountsFinalStatusOverHTTP2(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	srv := httptest.NewUnstartedServer(m.instrument("inbound", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "ok")
		case "/denied":
			w.WriteHeader(http.StatusForbidden)
		default:
			io.WriteString(w, "ok")
		}
	})))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	for _, p := range []string{"/hints", "/plain", "/denied"} {
		resp, err := c.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s went over %s, want HTTP/2", p, resp.Proto)
		}
	}
	for code, want := range map[string]float64{"200": 2, "403": 1, "103": 0} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues("inbound", code)); got != want {
			t.Errorf("requests with code %s: %v, want %v", code, got, want)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	for _, f := range families {
		if f.GetName() == "rampart_proxy_request_duration_seconds" {
			for _, s := range f.GetMetric() {
				observed += s.GetHistogram().GetSampleCount()
			}
		}
	}
	if observed != 3 {
		t.Errorf("latency observations: %d, want 3", observed)
	}
}
