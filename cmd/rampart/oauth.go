package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/secretfile"
)

const oauthUsage = `rampart oauth client create --id ID --auth-method METHOD --grant TYPE [--grant ...] [--redirect-uri URI ...]
                                [--scope S ...] [--audience SPIFFE-ID ...] [--spiffe-id ID] [--jwks-file FILE] [--name NAME] [--json]
       rampart oauth client update ID --disable|--enable [--json]
       rampart oauth client list|show ID|delete ID [--json]
       rampart oauth user create --username NAME --password-file FILE|- [--name N] [--email E] [--group G ...] [--json]
       rampart oauth user update NAME [--password-file FILE|-] [--name N] [--email E] [--group G ...] [--disable|--enable]
                                [--unlock] [--totp enable|disable [--totp-uri-file FILE]] [--json]
       rampart oauth user unlock NAME [--json]
       rampart oauth user list|show NAME|delete NAME [--json]

Auth methods: client_secret_basic, client_secret_post (the secret is printed
once), private_key_jwt (--jwks-file with the client's public keys),
tls_client_auth (--spiffe-id of the client's SVID; its tokens are bound to
the certificate), none (public clients). Every client must use PKCE (S256).

Disabling (or deleting) a user or a client revokes at once its sessions,
refresh tokens and access tokens, and every token exchanged from them;
proxies learn of it within about a second. Enabling again brings none back.
"user unlock" ends the back-off after failed logins.
Grants: authorization_code, refresh_token, client_credentials,
urn:ietf:params:oauth:grant-type:token-exchange (or just token-exchange).

The issuer's discovery document is at https://SERVER/.well-known/openid-configuration.`

func runOAuth(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			return usagef("usage: %s", oauthUsage)
		}
		fmt.Fprintln(env.stdout, "Usage: "+oauthUsage)
		return nil
	}
	switch args[0] {
	case "client":
		return runOAuthClient(ctx, env, args[1:])
	case "user":
		return runOAuthUser(ctx, env, args[1:])
	}
	return usagef("unknown oauth object %q; usage: %s", args[0], oauthUsage)
}

func runOAuthClient(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", oauthUsage)
	}
	verb := args[0]
	fs := newFlags(env, "oauth client "+verb, oauthUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var c api.OAuthClient
	var grants, redirects, scopes, audience listFlag
	var jwksFile string
	var disable, enable bool
	switch verb {
	case "create":
		fs.StringVar(&c.ID, "id", "", "client ID")
		fs.StringVar(&c.Name, "name", "", "name shown on the login page")
		fs.StringVar(&c.AuthMethod, "auth-method", "client_secret_basic", "how the client authenticates at the token endpoint")
		fs.Var(&grants, "grant", "grant type it may use (repeatable)")
		fs.Var(&redirects, "redirect-uri", "exact redirect URI (repeatable)")
		fs.Var(&scopes, "scope", "scope it may be granted beyond openid, profile, email, groups, offline_access (repeatable)")
		fs.Var(&audience, "audience", "service (SPIFFE ID) it may get tokens for (repeatable)")
		fs.StringVar(&c.SPIFFEID, "spiffe-id", "", "SPIFFE ID of its SVID, for tls_client_auth; also its name in act claims")
		fs.StringVar(&jwksFile, "jwks-file", "", "JWK set with its public keys, for private_key_jwt")
	case "update":
		fs.BoolVar(&disable, "disable", false, "disable the client and revoke every token issued to it")
		fs.BoolVar(&enable, "enable", false, "enable the client again (its revoked tokens stay revoked)")
	case "list", "show", "delete":
	default:
		return usagef("unknown verb %q; usage: %s", verb, oauthUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		if c.ID == "" || len(grants) == 0 {
			return usagef("oauth client create needs --id and at least one --grant")
		}
		for i, g := range grants {
			if g == "token-exchange" {
				grants[i] = "urn:ietf:params:oauth:grant-type:token-exchange"
			}
		}
		c.GrantTypes, c.RedirectURIs, c.Scopes, c.Audience = grants, redirects, scopes, audience
		if jwksFile != "" {
			b, err := os.ReadFile(jwksFile)
			if err != nil {
				return err
			}
			if !json.Valid(b) {
				return fmt.Errorf("%s is not JSON (want a JWK set)", jwksFile)
			}
			c.JWKS = b
		}
		var out api.OAuthClient
		if err := cl.Do(ctx, http.MethodPost, "/v1/oauth/clients", c, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintf(env.stdout, "client_id:     %s\n", out.ID)
		if out.Secret != "" {
			fmt.Fprintf(env.stdout, "client_secret: %s\n", out.Secret)
			fmt.Fprintln(env.stderr, "The secret is shown only now; the server keeps only its hash.")
		}
		return nil
	case "list":
		var out []api.OAuthClient
		if err := cl.Do(ctx, http.MethodGet, "/v1/oauth/clients", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := table(env, "ID", "AUTH", "GRANTS", "AUDIENCE")
		for _, c := range out {
			tw.row(c.ID, c.AuthMethod, strings.Join(c.GrantTypes, ","), strings.Join(c.Audience, ","))
		}
		return tw.flush()
	}
	if fs.NArg() != 1 {
		return usagef("oauth client %s takes one client ID", verb)
	}
	path := "/v1/oauth/clients/" + pathEscape(fs.Arg(0))
	if verb == "update" {
		if disable == enable {
			return usagef("oauth client update needs exactly one of --disable and --enable")
		}
		var out api.OAuthClient
		if err := cl.Do(ctx, http.MethodPatch, path, api.OAuthClientUpdate{Disabled: &disable}, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		state := "enabled"
		if out.Disabled {
			state = "disabled; every token issued to it is revoked"
		}
		fmt.Fprintf(env.stdout, "OAuth client %s %s\n", out.ID, state)
		return nil
	}
	if verb == "delete" {
		if err := cl.Do(ctx, http.MethodDelete, path, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "deleted OAuth client %s\n", fs.Arg(0))
		return nil
	}
	var out api.OAuthClient
	if err := cl.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, out)
	}
	return printFields(env, "ID", out.ID, "Name", out.Name, "Auth method", out.AuthMethod, "Grants", strings.Join(out.GrantTypes, ", "),
		"Redirect URIs", strings.Join(out.RedirectURIs, ", "), "Scopes", strings.Join(out.Scopes, ", "),
		"Audience", strings.Join(out.Audience, ", "), "SPIFFE ID", out.SPIFFEID, "Disabled", fmt.Sprint(out.Disabled), "Created", fmtTime(out.CreatedAt))
}

// readPassword reads a password from a file, or stdin for "-", trimming
// one trailing newline.
func readPassword(path string) (string, error) {
	if path != "-" {
		// A file: refused if group or others may read it.
		b, err := secretfile.Read(path)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if pw == "" {
		return "", errors.New("the password file is empty")
	}
	return pw, nil
}

func runOAuthUser(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 {
		return usagef("usage: %s", oauthUsage)
	}
	verb := args[0]
	fs := newFlags(env, "oauth user "+verb, oauthUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var u api.OAuthUser
	var groups listFlag
	var pwFile, totp, totpOut string
	var disable, enable, unlock bool
	switch verb {
	case "create", "update":
		if verb == "create" {
			fs.StringVar(&u.Username, "username", "", "user name (lower case)")
		}
		fs.StringVar(&pwFile, "password-file", "", "file holding the password, or - for standard input (never a flag: flags show in ps)")
		fs.StringVar(&u.Name, "name", "", "display name")
		fs.StringVar(&u.Email, "email", "", "e-mail address")
		fs.Var(&groups, "group", "group (repeatable); in tokens as the groups claim")
		if verb == "update" {
			fs.BoolVar(&disable, "disable", false, "disable the account and revoke its sessions and tokens")
			fs.BoolVar(&enable, "enable", false, "enable the account (its revoked tokens stay revoked)")
			fs.BoolVar(&unlock, "unlock", false, "end the back-off after failed logins")
			fs.StringVar(&totp, "totp", "", "enable (prints the otpauth:// URI once) or disable the second factor")
			fs.StringVar(&totpOut, "totp-uri-file", "", "with --totp enable: write the otpauth:// URI to this new file (0600) instead of printing it (for scripts: rampart login --totp-secret-file reads it)")
		}
	case "list", "show", "delete", "unlock":
	default:
		return usagef("unknown verb %q; usage: %s", verb, oauthUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	printUser := func(out api.OAuthUser) error {
		locked := ""
		if !out.LockedUntil.IsZero() {
			locked = fmtTime(out.LockedUntil)
		}
		return printFields(env, "Username", out.Username, "Name", out.Name, "E-mail", out.Email, "Groups", strings.Join(out.Groups, ", "),
			"Disabled", fmt.Sprint(out.Disabled), "Two-factor", fmt.Sprint(out.TOTP), "Failed logins", fmt.Sprint(out.FailedLogins),
			"Backing off until", locked, "Created", fmtTime(out.CreatedAt))
	}
	switch verb {
	case "create":
		if u.Username == "" || pwFile == "" {
			return usagef("oauth user create needs --username and --password-file")
		}
		if u.Password, err = readPassword(pwFile); err != nil {
			return err
		}
		u.Groups = groups
		var out api.OAuthUser
		if err := cl.Do(ctx, http.MethodPost, "/v1/oauth/users", u, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		fmt.Fprintf(env.stdout, "created user %s\n", out.Username)
		return nil
	case "list":
		var out []api.OAuthUser
		if err := cl.Do(ctx, http.MethodGet, "/v1/oauth/users", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		tw := table(env, "USERNAME", "NAME", "GROUPS", "2FA", "DISABLED")
		for _, u := range out {
			tw.row(u.Username, u.Name, strings.Join(u.Groups, ","), fmt.Sprint(u.TOTP), fmt.Sprint(u.Disabled))
		}
		return tw.flush()
	}
	if fs.NArg() != 1 {
		return usagef("oauth user %s takes one user name", verb)
	}
	path := "/v1/oauth/users/" + pathEscape(fs.Arg(0))
	switch verb {
	case "delete":
		if err := cl.Do(ctx, http.MethodDelete, path, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "deleted user %s\n", fs.Arg(0))
		return nil
	case "show":
		var out api.OAuthUser
		if err := cl.Do(ctx, http.MethodGet, path, nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, out)
		}
		return printUser(out)
	}
	if verb == "unlock" {
		unlock = true
	}
	// update, unlock
	var upd api.OAuthUserUpdate
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if pwFile != "" {
		pw, err := readPassword(pwFile)
		if err != nil {
			return err
		}
		upd.Password = &pw
	}
	if set["name"] {
		upd.Name = &u.Name
	}
	if set["email"] {
		upd.Email = &u.Email
	}
	if set["group"] {
		g := []string(groups)
		upd.Groups = &g
	}
	if disable && enable {
		return usagef("--disable and --enable contradict each other")
	}
	if disable || enable {
		upd.Disabled = &disable
	}
	upd.Unlock, upd.TOTP = unlock, totp
	// The file for the new secret is created (empty, 0600, never an
	// existing one) before the server rotates: a secret that cannot be
	// written is never made (red team: it rotated, then failed to write).
	var uriFile *os.File
	if totpOut != "" && totp == "enable" {
		f, err := os.OpenFile(totpOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("--totp-uri-file: %w (nothing changed)", err)
		}
		uriFile = f
		defer f.Close()
	}
	var out api.OAuthUserUpdateResponse
	if err := cl.Do(ctx, http.MethodPatch, path, upd, &out); err != nil {
		if uriFile != nil {
			uriFile.Close()
			os.Remove(totpOut)
		}
		return err
	}
	if out.TOTPURI != "" && uriFile != nil {
		_, err := fmt.Fprintln(uriFile, out.TOTPURI)
		err = errors.Join(err, uriFile.Close())
		if err != nil {
			return fmt.Errorf("--totp-uri-file: %w (the second factor is enabled; disable and enable it again for a new secret)", err)
		}
		out.TOTPURI = ""
		fmt.Fprintf(env.stdout, "The otpauth:// URI is in %s (0600).\n\n", totpOut)
	}
	if *asJSON {
		return printJSON(env, out)
	}
	if out.TOTPURI != "" {
		fmt.Fprintf(env.stdout, "Add this to the user's authenticator app (shown only now):\n%s\n\n", out.TOTPURI)
	}
	return printUser(out.User)
}
