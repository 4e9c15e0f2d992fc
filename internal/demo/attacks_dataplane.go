package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// attackPlaintext tries to read or write service traffic without TLS 1.3.
func attackPlaintext(ctx context.Context, sys *System) (Outcome, error) {
	addr := sys.Services.PaymentsInbound
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return Outcome{}, err
	}
	fmt.Fprintf(c, "GET /payments/1 HTTP/1.1\r\nHost: payments\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	c.Close()
	if strings.Contains(string(b), "settled") {
		return Outcome{}, errors.New("plain HTTP reached the payments app")
	}
	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, old)
	if err == nil {
		tc.Close()
		return Outcome{}, errors.New("the service port accepted TLS 1.2")
	}
	return Outcome{Stopped: true, Prevent: "the payments port speaks only TLS 1.3 with mutual authentication: plain HTTP got no service answer, a TLS 1.2 handshake was refused (" + lastLine(err.Error()) + "); there is no plaintext on the wire to eavesdrop"}, nil
}

func attackNoClientCert(ctx context.Context, sys *System) (Outcome, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}
	resp, err := hc.Get("https://" + sys.Services.PaymentsInbound + "/payments/1")
	if err == nil {
		resp.Body.Close()
		return Outcome{}, fmt.Errorf("a caller without a certificate got %d", resp.StatusCode)
	}
	return Outcome{Stopped: true, Prevent: "the payments proxy requires a client SVID from the trust bundle; the handshake failed (" + lastLine(err.Error()) + ")"}, nil
}

func attackForgedHeader(ctx context.Context, sys *System) (Outcome, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, sys.Services.GatewayURL+"/orders/42", nil)
	forged := "spiffe://" + TrustDomain.Name() + "/payments-admin"
	req.Header.Set("X-Rampart-Caller", forged)
	req.Header.Set("X-Forwarded-Client-Cert", "URI="+forged)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Outcome{}, err
	}
	defer resp.Body.Close()
	var body struct {
		VerifiedCaller string `json:"verified_caller"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	want := "spiffe://" + TrustDomain.Name() + "/gateway"
	if resp.StatusCode != 200 || body.VerifiedCaller != want {
		return Outcome{}, fmt.Errorf("orders saw caller %q (status %d), want %s", body.VerifiedCaller, resp.StatusCode, want)
	}
	return Outcome{Stopped: true, Prevent: "the orders proxy stripped the forged X-Rampart-Caller and X-Forwarded-Client-Cert headers; orders saw the caller proven by mTLS: " + want}, nil
}

func attackForbiddenCall(ctx context.Context, sys *System) (Outcome, error) {
	start := time.Now()
	var last []byte
	// 25 tries, as an intruder holding orders' identity would probe: a
	// burst the denied-burst rule is there to notice.
	for i := range 25 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, fmt.Sprintf("http://%s/payments/%d", sys.Services.OrdersToPay, i+1), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return Outcome{}, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			return Outcome{}, fmt.Errorf("orders deleted a payment: %d %s", resp.StatusCode, b)
		}
		last = b
	}
	var p struct {
		Detail string `json:"detail"`
	}
	json.Unmarshal(last, &p)
	out := Outcome{Stopped: true, Prevent: "payments' policy allows orders only GET /payments/{id}: 25 × 403 \"" + p.Detail + "\" (the caller learns the policy version, not its rules)"}
	a, err := waitAlert(ctx, sys, "denied-burst", start)
	if err != nil {
		return Outcome{}, err
	}
	out.Detect = alertLine(a)
	return out, nil
}

func attackPathTricks(ctx context.Context, sys *System) (Outcome, error) {
	addr := strings.TrimPrefix(sys.Services.GatewayURL, "http://")
	var got []string
	for _, target := range []string{"/orders/42/../../admin", "/orders/%2e%2e/admin", "/orders/1%2F..%2F..%2Fadmin", "//admin"} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return Outcome{}, err
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return Outcome{}, err
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
			return Outcome{}, fmt.Errorf("%s got %d", target, resp.StatusCode)
		}
		got = append(got, fmt.Sprintf("%s -> %d", target, resp.StatusCode))
	}
	return Outcome{Stopped: true, Prevent: "paths are normalised before the policy and ambiguous ones refused: " + strings.Join(got, ", "), Audited: "authz.decision"}, nil
}
