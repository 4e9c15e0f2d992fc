package objstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// ErrExists is returned by Put with IfAbsent when the key holds an object.
var ErrExists = errors.New("objstore: object exists")

// ErrNotFound is returned for a key that holds no object.
var ErrNotFound = errors.New("objstore: no such object")

// ErrTooLarge is returned by Get for an object larger than the caller's
// limit: the store is not trusted to bound what it sends.
var ErrTooLarge = errors.New("objstore: object larger than the limit")

// Config locates a bucket and the credentials to use it.
type Config struct {
	Bucket string
	Prefix string // key prefix, without leading or trailing slash
	// Endpoint is the service URL (http://127.0.0.1:7070, https://minio.example.org);
	// empty means AWS (https://BUCKET.s3.REGION.amazonaws.com).
	Endpoint        string
	Region          string // default us-east-1
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// HTTPClient defaults to a client with a 60 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now (signatures carry the time).
	Now func() time.Time
}

// ParseURL reads an object store URL:
//
//	s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]
//
// Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN, as for the AWS tools; never from the URL, which ends up
// in process listings and logs.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("objstore: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Config{}, fmt.Errorf("objstore: %q: want s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]", raw)
	}
	if u.User != nil {
		return Config{}, errors.New("objstore: put credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not in the URL")
	}
	q := u.Query()
	for k := range q {
		if k != "endpoint" && k != "region" {
			return Config{}, fmt.Errorf("objstore: %q: unknown parameter %q (endpoint, region)", raw, k)
		}
	}
	c := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: q.Get("endpoint"), Region: q.Get("region"),
		AccessKeyID: os.Getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN")}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return Config{}, errors.New("objstore: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set for " + raw)
	}
	return c, nil
}

// Bucket is a connection to one bucket (and key prefix).
type Bucket struct {
	cfg  Config
	base *url.URL // where object keys are appended
}

// New checks cfg and returns a Bucket.
func New(cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" || strings.ContainsAny(cfg.Bucket, "/?#") {
		return nil, fmt.Errorf("objstore: bad bucket name %q", cfg.Bucket)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var base *url.URL
	if cfg.Endpoint == "" {
		base = &url.URL{Scheme: "https", Host: cfg.Bucket + ".s3." + cfg.Region + ".amazonaws.com", Path: "/"}
	} else {
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return nil, fmt.Errorf("objstore: endpoint %q: want http(s)://HOST[:PORT]", cfg.Endpoint)
		}
		base = &url.URL{Scheme: e.Scheme, Host: e.Host, Path: strings.TrimSuffix(e.Path, "/") + "/" + cfg.Bucket + "/"}
	}
	return &Bucket{cfg: cfg, base: base}, nil
}

// String names the bucket for messages (no credentials).
func (b *Bucket) String() string {
	return "s3://" + b.cfg.Bucket + "/" + b.cfg.Prefix
}

func (b *Bucket) key(k string) string {
	if b.cfg.Prefix == "" {
		return k
	}
	return b.cfg.Prefix + "/" + k
}

// Put stores data under key. With ifAbsent the write is conditional
// (If-None-Match: *) and an existing object gives ErrExists.
func (b *Bucket) Put(ctx context.Context, key string, data []byte, ifAbsent bool) error {
	h := http.Header{}
	if ifAbsent {
		h.Set("If-None-Match", "*")
	}
	resp, err := b.do(ctx, http.MethodPut, b.key(key), nil, h, data)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusPreconditionFailed, http.StatusConflict:
		if ifAbsent {
			return fmt.Errorf("%w: %s", ErrExists, key)
		}
	}
	return b.failure(resp, "put "+key)
}

// Get returns the object under key, which must be at most max bytes: a
// larger one (announced by Content-Length, or found while reading) gives
// ErrTooLarge after reading no more than max+1 bytes, so a store that
// sends an endless body cannot exhaust memory.
func (b *Bucket) Get(ctx context.Context, key string, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("objstore: get %s: negative limit %d", key, max)
	}
	resp, err := b.do(ctx, http.MethodGet, b.key(key), nil, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength > max {
			return nil, fmt.Errorf("%w: get %s in %s: %d bytes announced, at most %d bytes accepted", ErrTooLarge, key, b, resp.ContentLength, max)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
		if err != nil {
			return nil, fmt.Errorf("objstore: get %s: %w", key, err)
		}
		if int64(len(data)) > max {
			return nil, fmt.Errorf("%w: get %s in %s: more sent, at most %d bytes accepted", ErrTooLarge, key, b, max)
		}
		return data, nil
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return nil, b.failure(resp, "get "+key)
}

// Object is a listed object.
type Object struct {
	Key  string // relative to the bucket's prefix
	Size int64
}

// List returns the objects under prefix (relative to the bucket's
// prefix), in lexical order of their keys.
func (b *Bucket) List(ctx context.Context, prefix string) ([]Object, error) {
	var objs []Object
	token := ""
	for {
		q := url.Values{"list-type": {"2"}, "prefix": {b.key(prefix)}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		resp, err := b.do(ctx, http.MethodGet, "", q, nil, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			defer resp.Body.Close()
			return nil, b.failure(resp, "list "+prefix)
		}
		var out struct {
			Contents []struct {
				Key  string
				Size int64
			}
			IsTruncated           bool
			NextContinuationToken string
		}
		err = xml.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("objstore: list %s: %w", prefix, err)
		}
		for _, c := range out.Contents {
			k := c.Key
			if b.cfg.Prefix != "" {
				k = strings.TrimPrefix(k, b.cfg.Prefix+"/")
			}
			objs = append(objs, Object{Key: k, Size: c.Size})
		}
		if !out.IsTruncated || out.NextContinuationToken == "" {
			break
		}
		token = out.NextContinuationToken
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// failure turns an error response into an error naming the S3 code.
func (b *Bucket) failure(resp *http.Response, what string) error {
	var e struct {
		Code    string
		Message string
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	xml.Unmarshal(body, &e)
	if e.Code == "" {
		e.Code = resp.Status
	}
	return fmt.Errorf("objstore: %s in %s: %s %s", what, b, e.Code, e.Message)
}

// do sends a signed request for key (empty: the bucket itself).
func (b *Bucket) do(ctx context.Context, method, key string, q url.Values, h http.Header, body []byte) (*http.Response, error) {
	u := *b.base
	u.Path += key
	u.RawPath = uriEncode(u.Path, false) // the path on the wire is the one signed
	u.RawQuery = canonicalQuery(q)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	req.ContentLength = int64(len(body))
	if body == nil {
		req.Body = http.NoBody
	}
	for k, v := range h {
		req.Header[k] = v
	}
	b.sign(req, body)
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("objstore: %s %s: %w", method, b.String(), err)
	}
	return resp, nil
}

// sign adds AWS Signature Version 4 headers to req.
func (b *Bucket) sign(req *http.Request, body []byte) {
	now := b.cfg.Now().UTC()
	amzDate := now.Format("20060102T150405Z")
	day := now.Format("20060102")
	payload := sha256.Sum256(body)
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(payload[:]))
	if b.cfg.SessionToken != "" {
		req.Header.Set("X-Amz-Security-Token", b.cfg.SessionToken)
	}
	scope := day + "/" + b.cfg.Region + "/s3/aws4_request"
	canonical, signed := canonicalRequest(req, req.URL.Host, hex.EncodeToString(payload[:]))
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := signingKey(b.cfg.SecretAccessKey, day, b.cfg.Region, "s3")
	sig := hmacSHA256(key, []byte(toSign))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+b.cfg.AccessKeyID+"/"+scope+
		", SignedHeaders="+signed+", Signature="+hex.EncodeToString(sig))
}

// canonicalRequest is SigV4's canonical request; it signs host and every
// x-amz-*, content-*, range and if-* header.
func canonicalRequest(req *http.Request, host, payloadHash string) (string, string) {
	hdrs := map[string]string{"host": host}
	for k, v := range req.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-amz-") || strings.HasPrefix(lk, "content-") || lk == "range" || strings.HasPrefix(lk, "if-") {
			hdrs[lk] = strings.Join(strings.Fields(strings.Join(v, ",")), " ")
		}
	}
	names := make([]string, 0, len(hdrs))
	for k := range hdrs {
		names = append(names, k)
	}
	slices.Sort(names)
	var ch strings.Builder
	for _, k := range names {
		ch.WriteString(k + ":" + hdrs[k] + "\n")
	}
	signed := strings.Join(names, ";")
	return req.Method + "\n" + uriEncode(req.URL.Path, false) + "\n" + req.URL.RawQuery + "\n" + ch.String() + "\n" + signed + "\n" + payloadHash, signed
}

// canonicalQuery encodes q sorted by key, SigV4 style.
func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		vs := slices.Clone(q[k])
		slices.Sort(vs)
		for _, v := range vs {
			parts = append(parts, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	return strings.Join(parts, "&")
}

// uriEncode is SigV4's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ is
// percent-encoded; "/" too unless it separates path segments.
func uriEncode(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !slash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func signingKey(secret, day, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(day))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte("aws4_request"))
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}
