package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rampartsec/rampart/internal/api"
)

const kmsUsage = `rampart kms key create NAME [--type aes256-gcm|ecdsa-p256|ed25519|hmac-sha256] [--rotate-every DURATION] [--json]
       rampart kms key list [--json]
       rampart kms key show NAME [--json]
       rampart kms key rotate NAME [--json]
       rampart kms key disable|enable|restore NAME VERSION [--json]
       rampart kms key destroy NAME VERSION [--grace DURATION] [--json]

Admins manage keys; workloads use them (encrypt, decrypt, datakey, rewrap,
sign, verify, hmac, verify-hmac) over mTLS with their SVID, through the
Go SDK (sdk/kms) or POST /v1/kms/keys/NAME/OPERATION, as the key-use policy
allows. That policy protects the service spiffe://TRUST-DOMAIN/rampart/kms,
with paths /keys/NAME/OPERATION; without it every use is denied. Example:

  service: spiffe://example.org/rampart/kms
  rules:
    - name: orders-uses-pii
      callers: [spiffe://example.org/orders]
      paths: [/keys/orders-pii/encrypt, /keys/orders-pii/decrypt, /keys/orders-pii/datakey]

Versions: rotate adds one and makes it the latest; old versions still
decrypt and verify. disable refuses a version until enable; destroy
schedules its erasure after --grace (default 168h, at least 1h), which
restore cancels (the version is then disabled). The latest version cannot
be destroyed: rotate first. A destroyed version's data is unreadable.`

func runKMS(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			return usagef("usage: %s", kmsUsage)
		}
		fmt.Fprintln(env.stdout, "Usage: "+kmsUsage)
		return nil
	}
	if args[0] != "key" {
		return usagef("unknown kms object %q; usage: %s", args[0], kmsUsage)
	}
	args = args[1:]
	if len(args) == 0 {
		return usagef("usage: %s", kmsUsage)
	}
	verb := args[0]
	fs := newFlags(env, "kms key "+verb, kmsUsage)
	ac := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var req api.KMSCreateKeyRequest
	var every, grace time.Duration
	nargs := 1
	switch verb {
	case "create":
		fs.StringVar(&req.Type, "type", "aes256-gcm", "key type: aes256-gcm, ecdsa-p256, ed25519 or hmac-sha256")
		fs.DurationVar(&every, "rotate-every", 0, "rotate on this schedule (e.g. 720h); default: manual only")
	case "list":
		nargs = 0
	case "show", "rotate":
	case "disable", "enable", "restore":
		nargs = 2
	case "destroy":
		nargs = 2
		fs.DurationVar(&grace, "grace", 0, "erase the version after this long (default 168h)")
	default:
		return usagef("unknown verb %q; usage: %s", verb, kmsUsage)
	}
	if err := parse(env, fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		return usagef("kms key %s takes %d argument(s); usage: %s", verb, nargs, kmsUsage)
	}
	cl, err := ac.client(env)
	if err != nil {
		return err
	}
	var out api.KMSKey
	switch verb {
	case "create":
		req.Name, req.RotateEverySeconds = fs.Arg(0), int64(every/time.Second)
		err = cl.Do(ctx, http.MethodPost, "/v1/kms/keys", req, &out)
	case "list":
		var list []api.KMSKey
		if err := cl.Do(ctx, http.MethodGet, "/v1/kms/keys", nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, list)
		}
		tw := table(env, "NAME", "TYPE", "LATEST", "ROTATE-EVERY", "ROTATED")
		for _, k := range list {
			tw.row(k.Name, k.Type, strconv.Itoa(k.Latest), rotateEvery(k), fmtTime(k.RotatedAt))
		}
		return tw.flush()
	case "show":
		err = cl.Do(ctx, http.MethodGet, "/v1/kms/keys/"+pathEscape(fs.Arg(0)), nil, &out)
	case "rotate":
		err = cl.Do(ctx, http.MethodPost, "/v1/kms/keys/"+pathEscape(fs.Arg(0))+"/rotate", nil, &out)
	default:
		v, perr := strconv.Atoi(fs.Arg(1))
		if perr != nil || v < 1 {
			return usagef("version %q: want a positive integer", fs.Arg(1))
		}
		err = cl.Do(ctx, http.MethodPost, fmt.Sprintf("/v1/kms/keys/%s/versions/%d/%s", pathEscape(fs.Arg(0)), v, verb),
			api.KMSVersionRequest{GraceSeconds: int64(grace / time.Second)}, &out)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, out)
	}
	if err := printFields(env, "Name", out.Name, "Type", out.Type, "Latest version", strconv.Itoa(out.Latest),
		"Rotates every", rotateEvery(out), "Created", fmtTime(out.CreatedAt), "Rotated", fmtTime(out.RotatedAt)); err != nil {
		return err
	}
	tw := table(env, "VERSION", "STATE", "CREATED", "DESTROY-AT")
	for _, v := range out.Versions {
		at := ""
		if v.DestroyAt != nil {
			at = fmtTime(*v.DestroyAt)
		}
		tw.row(strconv.Itoa(v.Version), v.State, fmtTime(v.CreatedAt), at)
	}
	return tw.flush()
}

func rotateEvery(k api.KMSKey) string {
	if k.RotateEverySeconds == 0 {
		return "manual"
	}
	return strings.TrimSuffix((time.Duration(k.RotateEverySeconds) * time.Second).String(), "0m0s")
}
