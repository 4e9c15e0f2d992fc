// Package mailsend sends one plain-text mail over SMTP, the way detection
// alerts and Respond's notices do: STARTTLS when the server offers it, no
// authentication, one deadline over the whole exchange.
package mailsend

import (
	"context"
	"crypto/tls"
	"net"
	"net/smtp"
	"strings"
	"time"
)

// Send is smtp.SendMail (STARTTLS when offered, no auth) bounded by one
// deadline over the whole exchange (timeout, or ctx's if sooner), which
// smtp.SendMail does not have.
func Send(ctx context.Context, addr, from string, to []string, msg []byte, timeout time.Duration) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// HeaderSafe keeps a mail header on one line: text an attacker influenced
// (an alert's summary) cannot add headers.
func HeaderSafe(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
