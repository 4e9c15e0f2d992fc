package workload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// DeltaSecrets is the incremental xDS protocol (Envoy's api_type
// DELTA_GRPC), over the same resolution as StreamSecrets:
//
//   - Requests subscribe and unsubscribe resource names; the first one
//     naming none subscribes to everything (the wildcard).
//   - Each resource carries its own version (a digest of its content);
//     a response carries only the resources whose version the client does
//     not have: subscribed now, changed (rotation), or older than the
//     initial_resource_versions of a reconnecting client.
//   - An ACK or NACK (error_detail, logged) of the last nonce is not
//     answered; a request with an older nonce is stale and ignored, except
//     for the subscriptions it changes.
//   - As in StreamSecrets, naming an SVID the caller is not entitled to
//     ends the stream with PermissionDenied.
func (d *sds) DeltaSecrets(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx := stream.Context()
	reqs := make(chan *discoveryv3.DeltaDiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		subscribed = map[string]bool{}
		wildcard   bool
		started    bool
		validator  bool
		typeURL    string
		have       = map[string]string{} // name -> version the client holds
		nonce      string
		system     uint64
	)
	snap, changed := d.s.src.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if req.TypeUrl != "" && req.TypeUrl != SDSSecretType {
				return status.Errorf(codes.InvalidArgument, "type_url %q is not served here; SDS serves %s", req.TypeUrl, SDSSecretType)
			}
			if req.ErrorDetail != nil {
				d.s.log.Warn("SDS (delta): the client rejected secrets (NACK)", "nonce", req.ResponseNonce, "error", req.ErrorDetail.GetMessage())
			}
			before := len(subscribed)
			wasWildcard := wildcard
			for _, n := range req.ResourceNamesSubscribe {
				if n == "*" {
					wildcard = true
				} else if n != "" {
					subscribed[n] = true
				}
			}
			for _, n := range req.ResourceNamesUnsubscribe {
				if n == "*" {
					wildcard = false
				}
				delete(subscribed, n)
				delete(have, n)
			}
			if !started {
				started, typeURL = true, req.TypeUrl
				validator = supportsSPIFFEValidator(req.Node)
				if len(req.ResourceNamesSubscribe) == 0 {
					wildcard = true // the legacy wildcard: a first request naming nothing
				}
				maps.Copy(have, req.InitialResourceVersions)
			} else if req.ResponseNonce != "" && req.ResponseNonce != nonce && len(subscribed) == before && wildcard == wasWildcard {
				d.s.log.Debug("SDS (delta): ignoring a stale request", "nonce", req.ResponseNonce, "expect", nonce)
				continue
			}
			if req.ResponseNonce != "" && len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 {
				continue // an ACK or NACK: wait for a change
			}
		case <-changed:
			snap, changed = d.s.src.Snapshot()
			if !started {
				continue
			}
		}
		var secrets []*tlsv3.Secret
		if wildcard {
			all, err := d.resolve(ctx, snap, sdsRequest{spiffeValidator: validator}, "DeltaSecrets")
			if err != nil {
				return err
			}
			secrets = all
		}
		if len(subscribed) > 0 {
			named, err := d.resolve(ctx, snap, sdsRequest{names: slices.Sorted(maps.Keys(subscribed)), spiffeValidator: validator}, "DeltaSecrets")
			if err != nil {
				return err
			}
			for _, sec := range named {
				if !slices.ContainsFunc(secrets, func(o *tlsv3.Secret) bool { return o.Name == sec.Name }) {
					secrets = append(secrets, sec)
				}
			}
		}
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL}
		if resp.TypeUrl == "" {
			resp.TypeUrl = SDSSecretType
		}
		present := map[string]bool{}
		for _, sec := range secrets {
			present[sec.Name] = true
			res, err := deltaResource(sec)
			if err != nil {
				return err
			}
			if have[sec.Name] == res.Version {
				continue
			}
			have[sec.Name] = res.Version
			resp.Resources = append(resp.Resources, res)
		}
		// Wildcard subscribers learn of secrets they no longer get.
		for name := range have {
			if !present[name] && wildcard && !subscribed[name] {
				resp.RemovedResources = append(resp.RemovedResources, name)
				delete(have, name)
			}
		}
		if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 {
			continue
		}
		slices.Sort(resp.RemovedResources)
		system++
		resp.SystemVersionInfo = strconv.FormatUint(system, 10)
		resp.Nonce = newNonce()
		if err := stream.Send(resp); err != nil {
			return err
		}
		nonce = resp.Nonce
	}
}

// deltaResource wraps a secret with its version: a digest of its content.
func deltaResource(s *tlsv3.Secret) (*discoveryv3.Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return nil, status.Error(codes.Internal, "encoding a secret failed")
	}
	a, err := anypb.New(s)
	if err != nil {
		return nil, status.Error(codes.Internal, "encoding a secret failed")
	}
	sum := sha256.Sum256(b)
	return &discoveryv3.Resource{Name: s.Name, Version: hex.EncodeToString(sum[:12]), Resource: a}, nil
}
