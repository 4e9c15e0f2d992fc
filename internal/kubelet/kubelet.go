package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultURL is the kubelet's authenticated port on the node.
const DefaultURL = "https://127.0.0.1:10250"

// DefaultTokenFile is where a pod's service account token is mounted.
const DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// maxBody bounds a /pods answer: a node runs at most a few hundred pods.
const maxBody = 32 << 20

// maxToken bounds the token file: a JWT, not a document.
const maxToken = 64 << 10

// Config says how to reach the kubelet.
type Config struct {
	// URL is the kubelet's base URL (DefaultURL when empty); https only.
	URL string
	// CAFile holds the PEM certificates the kubelet's serving certificate
	// must chain to. Required: the kubelet is never trusted unverified.
	CAFile string
	// ServerName is the name to check the kubelet's certificate for,
	// when it is not the URL's host (a kubelet certificate names the
	// node, seldom 127.0.0.1).
	ServerName string
	// TokenFile holds the bearer token (DefaultTokenFile when empty),
	// read at every request.
	TokenFile string
	// Timeout bounds one request (5s when zero).
	Timeout time.Duration
}

// Client asks the kubelet about pods.
type Client struct {
	base      *url.URL
	tokenFile string
	http      *http.Client
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	raw := cfg.URL
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubelet: URL %q: want https://HOST:PORT", raw)
	}
	if cfg.CAFile == "" {
		return nil, errors.New("kubelet: a CA file is required to check the kubelet's certificate")
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("kubelet: CA file %s holds no PEM certificate", cfg.CAFile)
	}
	tokenFile := cfg.TokenFile
	if tokenFile == "" {
		tokenFile = DefaultTokenFile
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS13},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 2,
		Proxy:               nil, // the node's own kubelet, never through a proxy
	}
	return &Client{base: u, tokenFile: tokenFile, http: &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("kubelet: redirect refused") }}}, nil
}

// Pod is what the agent needs of a pod.
type Pod struct {
	UID, Namespace, Name, ServiceAccount, NodeName string
	Labels                                         map[string]string
	// Containers maps container IDs (without the "runtime://" prefix)
	// to container names.
	Containers map[string]string
}

// ErrNotFound is returned (wrapped) when the kubelet lists no pod with
// the UID, or the pod no container with the ID.
var ErrNotFound = errors.New("kubelet: not found")

// Container returns the pod with uid and the name of its container with
// containerID, as the kubelet lists them now.
func (c *Client) Container(ctx context.Context, uid, containerID string) (Pod, string, error) {
	pods, err := c.Pods(ctx)
	if err != nil {
		return Pod{}, "", err
	}
	return Find(pods, uid, containerID)
}

// Find returns the pod with uid and the name of its container with
// containerID.
func Find(pods []Pod, uid, containerID string) (Pod, string, error) {
	for _, p := range pods {
		if p.UID != uid {
			continue
		}
		name, ok := p.Containers[containerID]
		if !ok {
			return Pod{}, "", fmt.Errorf("%w: pod %s/%s (%s) has no container %s (yet)", ErrNotFound, p.Namespace, p.Name, uid, containerID)
		}
		return p, name, nil
	}
	return Pod{}, "", fmt.Errorf("%w: no pod %s on this node", ErrNotFound, uid)
}

// Pods lists the node's pods (GET /pods).
func (c *Client) Pods(ctx context.Context) ([]Pod, error) {
	tok, err := readToken(c.tokenFile)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.JoinPath("pods").String(), nil)
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kubelet: GET /pods: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kubelet: GET /pods: %s (is the token's service account allowed nodes/proxy?)", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("kubelet: GET /pods: %w", err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("kubelet: GET /pods: answer larger than %d bytes", maxBody)
	}
	return ParsePodList(b)
}

func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kubelet: token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("kubelet: token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(b) > maxToken || tok == "" || strings.ContainsAny(tok, " \r\n\t") {
		return "", fmt.Errorf("kubelet: token file %s does not hold one token", path)
	}
	return tok, nil
}

// podList is the part of a v1 PodList the agent reads.
type podList struct {
	Kind  string `json:"kind"`
	Items []struct {
		Metadata struct {
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			UID       string            `json:"uid"`
			Labels    map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			ServiceAccountName string `json:"serviceAccountName"`
			NodeName           string `json:"nodeName"`
		} `json:"spec"`
		Status struct {
			ContainerStatuses          []containerStatus `json:"containerStatuses"`
			InitContainerStatuses      []containerStatus `json:"initContainerStatuses"`
			EphemeralContainerStatuses []containerStatus `json:"ephemeralContainerStatuses"`
		} `json:"status"`
	} `json:"items"`
}

type containerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
}

// ParsePodList parses the kubelet's /pods answer (a v1 PodList). A pod
// without a UID, or a container ID seen in two pods, is an error: the
// answer is not what a kubelet sends.
func ParsePodList(b []byte) ([]Pod, error) {
	var pl podList
	if err := json.Unmarshal(b, &pl); err != nil {
		return nil, fmt.Errorf("kubelet: /pods: %w", err)
	}
	// The kubelet answers kind "List" (older) or "PodList".
	if pl.Kind != "PodList" && pl.Kind != "List" {
		return nil, fmt.Errorf("kubelet: /pods: kind %q, want PodList", pl.Kind)
	}
	owner := map[string]string{}
	out := make([]Pod, 0, len(pl.Items))
	for i, it := range pl.Items {
		if it.Metadata.UID == "" {
			return nil, fmt.Errorf("kubelet: /pods: item %d has no UID", i)
		}
		p := Pod{UID: it.Metadata.UID, Namespace: it.Metadata.Namespace, Name: it.Metadata.Name,
			ServiceAccount: it.Spec.ServiceAccountName, NodeName: it.Spec.NodeName,
			Labels: it.Metadata.Labels, Containers: map[string]string{}}
		if p.ServiceAccount == "" {
			p.ServiceAccount = "default"
		}
		for _, group := range [][]containerStatus{it.Status.ContainerStatuses, it.Status.InitContainerStatuses, it.Status.EphemeralContainerStatuses} {
			for _, cs := range group {
				_, id, ok := strings.Cut(cs.ContainerID, "://")
				if !ok || id == "" {
					continue // not started yet
				}
				if prev, dup := owner[id]; dup && prev != p.UID {
					return nil, fmt.Errorf("kubelet: /pods: container %s listed in pods %s and %s", id, prev, p.UID)
				}
				owner[id] = p.UID
				p.Containers[id] = cs.Name
			}
		}
		out = append(out, p)
	}
	return out, nil
}
