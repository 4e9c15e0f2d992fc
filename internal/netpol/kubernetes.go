package netpol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/yamlfields"
)

// Pods says which pods run a SPIFFE ID in Kubernetes: their namespace and
// the labels that select them (a NetworkPolicy selects pods by label only).
type Pods struct {
	SpiffeID       spiffeid.ID
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
}

// PodMap maps SPIFFE IDs to pods.
type PodMap map[spiffeid.ID]Pods

// Pods returns where id runs: from the map, else from the SPIFFE ID
// convention of Kubernetes trust domains (Istio's and SPIRE's),
// "/ns/NAMESPACE/sa/SERVICEACCOUNT".
func (m PodMap) Pods(id spiffeid.ID) (Pods, bool) {
	if p, ok := m[id]; ok {
		return p, true
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) == 4 && seg[0] == "ns" && seg[2] == "sa" && dnsLabel.MatchString(seg[1]) && dnsSubdomain.MatchString(seg[3]) {
		return Pods{SpiffeID: id, Namespace: seg[1], ServiceAccount: seg[3]}, true
	}
	return Pods{}, false
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	labelKey     = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	labelValue   = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

// ParsePodMap reads a pod map:
//
//	# pods.yaml
//	- spiffe_id: spiffe://example.org/ns/shop/sa/orders
//	  namespace: shop
//	  service_account: orders     # optional
//	  labels: {app: orders}
//
// Errors name the line and the field.
func ParsePodMap(r io.Reader) (PodMap, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(r).Decode(&doc); err != nil {
		if err == io.EOF {
			return PodMap{}, nil
		}
		return nil, fmt.Errorf("pod map: %w", err)
	}
	n := doc.Content[0]
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("pod map: line %d: want a list of {spiffe_id, namespace, labels}", n.Line)
	}
	m := PodMap{}
	for i, e := range n.Content {
		where := fmt.Sprintf("[%d]", i)
		f, err := yamlfields.Map(e, where, "spiffe_id", "namespace", "service_account", "labels")
		if err != nil {
			return nil, fmt.Errorf("pod map: %w", err)
		}
		bad := func(n *yaml.Node, field, format string, a ...any) error {
			return fmt.Errorf("pod map: line %d: %s.%s: %s", n.Line, where, field, fmt.Sprintf(format, a...))
		}
		var p Pods
		idn, ok := f["spiffe_id"]
		if !ok {
			return nil, bad(e, "spiffe_id", "required")
		}
		if p.SpiffeID, err = spiffeid.FromString(idn.Value); err != nil {
			return nil, bad(idn, "spiffe_id", "%q: %v", idn.Value, err)
		}
		if _, dup := m[p.SpiffeID]; dup {
			return nil, bad(idn, "spiffe_id", "%s listed twice", p.SpiffeID)
		}
		nsn, ok := f["namespace"]
		if !ok {
			return nil, bad(e, "namespace", "required")
		}
		if p.Namespace = nsn.Value; !dnsLabel.MatchString(p.Namespace) {
			return nil, bad(nsn, "namespace", "%q is not a Kubernetes namespace name", p.Namespace)
		}
		if san, ok := f["service_account"]; ok {
			if p.ServiceAccount = san.Value; !dnsSubdomain.MatchString(p.ServiceAccount) {
				return nil, bad(san, "service_account", "%q is not a service account name", p.ServiceAccount)
			}
		}
		if ln, ok := f["labels"]; ok {
			if ln.Kind != yaml.MappingNode {
				return nil, bad(ln, "labels", "want a mapping of label keys to values")
			}
			p.Labels = map[string]string{}
			for j := 0; j+1 < len(ln.Content); j += 2 {
				k, v := ln.Content[j], ln.Content[j+1]
				if !labelKey.MatchString(k.Value) || v.Kind != yaml.ScalarNode || !labelValue.MatchString(v.Value) {
					return nil, bad(k, "labels", "%q: %q is not a valid label", k.Value, v.Value)
				}
				p.Labels[k.Value] = v.Value
			}
		}
		if len(p.Labels) == 0 && p.ServiceAccount == "" {
			return nil, bad(e, "labels", "give labels or a service_account: a policy must select pods")
		}
		m[p.SpiffeID] = p
	}
	return m, nil
}

// k8sObject is the part of a Kubernetes object we write.
type k8sObject struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
	Spec       any      `yaml:"spec"`
}

type metadata struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// objectName is a stable, valid name for the policy protecting id.
func objectName(id spiffeid.ID) string {
	sum := sha256.Sum256([]byte(id.String()))
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(id.Path()), "-"), "-")
	if len(base) > 40 {
		base = strings.Trim(base[len(base)-40:], "-")
	}
	return "rampart-" + base + "-" + hex.EncodeToString(sum[:4])
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

func annotations(s Service) map[string]string {
	a := map[string]string{"rampart.dev/spiffe-id": s.ID.String()}
	if s.Policy != "" {
		a["rampart.dev/policy"] = s.ID.String() + "@" + s.Policy
	} else {
		a["rampart.dev/policy"] = "none (default deny)"
	}
	return a
}

// inboundPorts is every inbound port the service listens on, on any host.
func (s Service) inboundPorts() []uint16 {
	var ps []uint16
	for _, h := range s.Hosts {
		for _, p := range s.Ports[h] {
			ps = appendUnique(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// Kubernetes renders one NetworkPolicy per service with pods: ingress to
// its pods only from its allowed callers' pods, and only at its inbound
// ports where agents reported them. It also returns what it could not map.
func (v *View) Kubernetes(pods PodMap) (string, []string) {
	var b strings.Builder
	b.WriteString(v.Header("#"))
	var problems []string
	for _, s := range v.Services {
		p, ok := pods.Pods(s.ID)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no pods (add it to the pod map, or use a /ns/NS/sa/SA SPIFFE ID)", s.ID))
			continue
		}
		sel, ok := podSelector(p)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: a NetworkPolicy selects pods by label only; give its labels in the pod map", s.ID))
			continue
		}
		ingress := []map[string]any{}
		var from []map[string]any
		for _, c := range s.Callers {
			cp, ok := pods.Pods(c)
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: caller %s has no pods", s.ID, c))
				continue
			}
			csel, ok := podSelector(cp)
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: caller %s has no pod labels", s.ID, c))
				continue
			}
			from = append(from, map[string]any{
				"namespaceSelector": map[string]any{"matchLabels": map[string]string{"kubernetes.io/metadata.name": cp.Namespace}},
				"podSelector":       csel,
			})
		}
		if len(from) > 0 {
			rule := map[string]any{"from": from}
			if ports := s.inboundPorts(); len(ports) > 0 {
				var ps []map[string]any
				for _, port := range ports {
					ps = append(ps, map[string]any{"protocol": "TCP", "port": int(port)})
				}
				rule["ports"] = ps
			} else {
				problems = append(problems, fmt.Sprintf("%s: no agent reported its inbound ports: its callers may reach every port of its pods", s.ID))
			}
			ingress = append(ingress, rule)
		}
		writeDoc(&b, k8sObject{
			APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy",
			Metadata: metadata{Name: objectName(s.ID), Namespace: p.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "rampart"}, Annotations: annotations(s)},
			Spec:     map[string]any{"podSelector": sel, "policyTypes": []string{"Ingress"}, "ingress": ingress},
		})
	}
	return b.String(), problems
}

func podSelector(p Pods) (map[string]any, bool) {
	if len(p.Labels) == 0 {
		return nil, false
	}
	return map[string]any{"matchLabels": maps.Clone(p.Labels)}, true
}

// Cilium renders CiliumNetworkPolicy objects; Cilium labels every pod
// with its namespace and service account, so a /ns/NS/sa/SA identity
// needs no pod map.
func (v *View) Cilium(pods PodMap) (string, []string) {
	var b strings.Builder
	b.WriteString(v.Header("#"))
	var problems []string
	sel := func(p Pods) (map[string]any, bool) {
		l := map[string]string{"k8s:io.kubernetes.pod.namespace": p.Namespace}
		for k, v := range p.Labels {
			l["k8s:"+k] = v
		}
		if p.ServiceAccount != "" {
			l["k8s:io.cilium.k8s.policy.serviceaccount"] = p.ServiceAccount
		}
		if len(l) == 1 {
			return nil, false
		}
		return map[string]any{"matchLabels": l}, true
	}
	for _, s := range v.Services {
		p, ok := pods.Pods(s.ID)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no pods (add it to the pod map, or use a /ns/NS/sa/SA SPIFFE ID)", s.ID))
			continue
		}
		es, ok := sel(p)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no labels or service account to select its pods", s.ID))
			continue
		}
		var from []map[string]any
		for _, c := range s.Callers {
			cp, ok := pods.Pods(c)
			cs, ok2 := sel(cp)
			if !ok || !ok2 {
				problems = append(problems, fmt.Sprintf("%s: caller %s has no pods", s.ID, c))
				continue
			}
			from = append(from, cs)
		}
		spec := map[string]any{"endpointSelector": es}
		rule := map[string]any{}
		if len(from) > 0 {
			rule["fromEndpoints"] = from
			if ports := s.inboundPorts(); len(ports) > 0 {
				var ps []map[string]any
				for _, port := range ports {
					ps = append(ps, map[string]any{"port": fmt.Sprint(port), "protocol": "TCP"})
				}
				rule["toPorts"] = []map[string]any{{"ports": ps}}
			}
			spec["ingress"] = []map[string]any{rule}
		} else {
			// An empty rule puts the endpoints in default deny for ingress.
			spec["ingress"] = []map[string]any{{}}
		}
		writeDoc(&b, k8sObject{
			APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy",
			Metadata: metadata{Name: objectName(s.ID), Namespace: p.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "rampart"}, Annotations: annotations(s)},
			Spec:     spec,
		})
	}
	return b.String(), problems
}

// writeDoc appends one YAML document; yaml.v3 sorts map keys, so the
// output is deterministic.
func writeDoc(b *strings.Builder, o k8sObject) {
	b.WriteString("---\n")
	enc := yaml.NewEncoder(b)
	enc.SetIndent(2)
	if err := enc.Encode(o); err != nil {
		panic(err) // only maps, slices, strings and ints
	}
	enc.Close()
}
