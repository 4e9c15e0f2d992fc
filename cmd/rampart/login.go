package main

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/secretfile"
	"github.com/rampartsec/rampart/internal/signin"
)

const loginUsage = `rampart login [--browser] [--as NAME] [--username NAME --password-file FILE [--totp-secret-file FILE]]
       rampart login approve --user-code CODE --username NAME --password-file FILE [--totp-secret-file FILE]

Signs you in as an operator: a short-lived access token for the admin API,
bound to a key that never leaves this machine (DPoP), kept with that key in
$XDG_CONFIG_HOME/rampart/operators/SERVER/ (0600) and refreshed by every admin
command that uses it.

By default it uses the device flow (RFC 8628): it prints a URL and a code;
open the URL anywhere (another machine will do), sign in with your password
and one-time code, and approve. --browser instead opens a browser on this
machine and takes the answer on a loopback port (RFC 8252, PKCE).

Without a browser or a person at hand (scripts, the demo): give
--username, --password-file and, if the user has TOTP, --totp-secret-file
(the otpauth:// URI or its base32 secret, 0600): login approves its own
code. Or run "rampart login" in one place and "rampart login approve" with
the code it printed in another.

--as NAME keeps the session only if the server signed in NAME: the
browser's URL is visible to other users of this machine (in the process
list), and whoever opens it first could finish your sign-in with their
own account; with --as that session is revoked and nothing is kept.

Every admin command then acts as you, and the audit log names you. rampart
logout revokes the tokens and deletes them; rampart whoami says who the
server sees.`

func runLogin(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) > 0 && args[0] == "approve" {
		return runLoginApprove(ctx, env, args[1:])
	}
	fs := newFlags(env, "login", loginUsage)
	ac := addAdminFlags(fs)
	browser := fs.Bool("browser", false, "sign in in a browser on this machine (loopback redirect with PKCE) instead of the device flow")
	username := fs.String("username", "", "approve the sign-in here as this user (needs --password-file)")
	pwFile := fs.String("password-file", "", "with --username: file holding the password (0600), or - for standard input")
	totpFile := fs.String("totp-secret-file", "", "with --username: file holding the user's otpauth:// URI or base32 TOTP secret (0600)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the approval")
	as := fs.String("as", "", "keep the session only if it is this operator's (refuse a sign-in someone else completed)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	hc, err := ac.httpClient()
	if err != nil {
		return err
	}
	dir, err := ac.sessionDir(env)
	if err != nil {
		return err
	}
	key, err := signin.LoadKey(dir)
	if err != nil {
		return err
	}
	c := ac.signinClient(hc, key)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	m, err := c.Metadata(ctx)
	if err != nil {
		return err
	}
	var tok *signin.Tokens
	switch {
	case *browser && *username != "":
		return usagef("--browser signs in in the browser; --username approves a device sign-in here: choose one")
	case *browser:
		tok, err = c.Loopback(ctx, func(u string) error {
			fmt.Fprintf(env.stderr, "Opening a browser to sign in. If none opens, visit:\n  %s\n", u)
			if err := openBrowser(u); err != nil {
				fmt.Fprintf(env.stderr, "(could not open a browser: %v)\n", err)
			}
			return nil
		})
	default:
		var da *signin.DeviceAuth
		if da, err = c.StartDevice(ctx); err != nil {
			return err
		}
		if *username != "" {
			if err := approve(ctx, hc, m.Issuer, da.UserCode, *username, *pwFile, *totpFile); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(env.stderr, "To sign in, open %s\nand enter the code %s (or open %s).\nWaiting...\n", da.VerificationURI, da.UserCode, da.VerificationURIComplete)
		}
		tok, err = c.PollDevice(ctx, da, sleepCtx)
	}
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	s := &signin.Session{Dir: dir, Server: trimScheme(ac.server), Issuer: m.Issuer, Tokens: *tok, Key: key, Client: c}
	who, err := whoami(ctx, ac, s, hc)
	if err != nil {
		// Signed in, but not an operator: keep nothing that cannot be used.
		c.Revoke(ctx, tok.RefreshToken, "refresh_token")
		signin.Remove(dir)
		return fmt.Errorf("login: signed in, but the admin API refuses the token: %w", err)
	}
	if err := signedInAs(*as, who); err != nil {
		c.Revoke(ctx, tok.RefreshToken, "refresh_token")
		return fmt.Errorf("login: %w; the session is revoked and nothing is kept", err)
	}
	s.Subject = who.Subject
	old, _ := signin.Load(dir)
	if err := s.Save(); err != nil {
		return err
	}
	if old != nil && old.RefreshToken != "" && old.RefreshToken != s.RefreshToken {
		c.Revoke(ctx, old.RefreshToken, "refresh_token") // the login this one replaces
	}
	fmt.Fprintf(env.stdout, "Signed in to %s as %s (%s), roles: %s; the token is kept in %s\n", s.Server, who.Subject,
		who.Name, rolesText(who.Roles), dir)
	return nil
}

func runLoginApprove(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "login approve", loginUsage)
	ac := addAdminFlags(fs)
	code := fs.String("user-code", "", "the code rampart login printed")
	username := fs.String("username", "", "the user who approves (and who will be signed in)")
	pwFile := fs.String("password-file", "", "file holding the password (0600), or - for standard input")
	totpFile := fs.String("totp-secret-file", "", "file holding the user's otpauth:// URI or base32 TOTP secret (0600)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *code == "" || *username == "" {
		return usagef("login approve needs --user-code and --username")
	}
	hc, err := ac.httpClient()
	if err != nil {
		return err
	}
	c := ac.signinClient(hc, nil)
	m, err := c.Metadata(ctx)
	if err != nil {
		return err
	}
	if err := approve(ctx, hc, m.Issuer, *code, *username, *pwFile, *totpFile); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "Approved: the terminal that showed %s is signed in as %s.\n", *code, *username)
	return nil
}

// approve approves a device sign-in as username with the password (and
// the current one-time code) from files.
func approve(ctx context.Context, hc *http.Client, issuer, code, username, pwFile, totpFile string) error {
	if pwFile == "" {
		return usagef("--username needs --password-file")
	}
	pw, err := readPassword(pwFile)
	if err != nil {
		return err
	}
	var secret []byte
	if totpFile != "" {
		if secret, err = readTOTPSecret(totpFile); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		otp := ""
		if secret != nil {
			otp = oauth.TOTPCode(secret, time.Now())
		}
		err = signin.Approve(ctx, hc, issuer, code, username, pw, otp)
		var oe *signin.Error
		if err == nil {
			return nil
		}
		if secret == nil || attempt > 0 || !errors.As(err, &oe) || oe.Code != "access_denied" {
			return fmt.Errorf("login: approving %s: %w", code, err)
		}
		// A one-time code is taken once: another sign-in may have used
		// this 30-second step's. Try once more with the next step's.
		if err := sleepCtx(ctx, time.Until(time.Now().Truncate(30*time.Second).Add(30*time.Second))+100*time.Millisecond); err != nil {
			return err
		}
	}
}

// readTOTPSecret reads an otpauth:// URI or a base32 secret from a
// private file.
func readTOTPSecret(path string) ([]byte, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("--totp-secret-file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "otpauth://") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("--totp-secret-file: %w", err)
		}
		s = u.Query().Get("secret")
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(s, "=")))
	if err != nil || len(secret) < 10 {
		return nil, errors.New("--totp-secret-file: want an otpauth:// URI or a base32 secret of at least 80 bits")
	}
	return secret, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting for the approval: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	return cmd.Start()
}

func whoami(ctx context.Context, ac *adminFlags, s *signin.Session, hc *http.Client) (api.Whoami, error) {
	c := &api.Client{BaseURL: "https://" + trimScheme(ac.server), HTTP: hc, Authorize: s.Authorize}
	var who api.Whoami
	err := c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who)
	return who, err
}

func rolesText(rs []api.OperatorRole) string {
	var out []string
	for _, r := range rs {
		t := r.Role
		if len(r.Services) > 0 {
			t += " (" + strings.Join(r.Services, ", ") + ")"
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

const logoutUsage = `rampart logout

Revokes the operator tokens of this server kept by rampart login (the whole
login: every access token refreshed from it) and deletes them and their key.`

func runLogout(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "logout", logoutUsage)
	ac := addAdminFlags(fs)
	if err := parse(env, fs, args); err != nil {
		return err
	}
	hc, err := ac.httpClient()
	if err != nil {
		return err
	}
	s, err := ac.session(env, hc)
	if errors.Is(err, signin.ErrNoSession) {
		fmt.Fprintln(env.stdout, "Not signed in to "+trimScheme(ac.server)+".")
		return nil
	}
	if err != nil {
		return err
	}
	var rerr error
	if s.RefreshToken != "" {
		rerr = s.Client.Revoke(ctx, s.RefreshToken, "refresh_token")
	}
	rerr = errors.Join(rerr, s.Client.Revoke(ctx, s.AccessToken, "access_token"))
	if err := signin.Remove(s.Dir); err != nil {
		return err
	}
	if rerr != nil {
		return fmt.Errorf("logout: the tokens are deleted here, but revoking them failed (they expire by themselves): %w", rerr)
	}
	fmt.Fprintf(env.stdout, "Signed out of %s (%s): its tokens are revoked and deleted.\n", trimScheme(ac.server), s.Subject)
	return nil
}

const whoamiUsage = `rampart whoami [--json]

Says who the server sees when you run admin commands: the operator signed in
with rampart login (subject, name, session, roles, permissions), or the
break-glass admin token.`

func runWhoami(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "whoami", whoamiUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	var who api.Whoami
	if err := cl.Do(ctx, http.MethodGet, "/v1/whoami", nil, &who); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, who)
	}
	subject := who.Subject
	if who.SpiffeID != "" {
		subject = who.SpiffeID
	}
	return printFields(env, "kind", who.Kind, "subject", subject, "name", orDash(who.Name), "session", orDash(who.Session),
		"signed in with", orDash(strings.Join(who.AMR, " ")), "expires", fmtTime(who.ExpiresAt), "roles", rolesText(who.Roles),
		"permissions", strings.Join(who.Permissions, " "))
}

// signedInAs checks that the session is want's ("": anyone's).
func signedInAs(want string, who api.Whoami) error {
	if want == "" || who.Subject == want {
		return nil
	}
	return fmt.Errorf("signed in as %s, not %s (someone else completed the sign-in?)", who.Subject, want)
}
