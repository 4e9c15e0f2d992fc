// Package intake is how the deployment's audit log takes entries shipped
// by others: agents' attestation refusals, proxies' and SDK services'
// decisions, and the entries of replicas that forward to the one that
// keeps the log (decision 0025). The log is evidence, so a source may only
// put in it what it witnesses (issue 26 item 3, decision 0030):
//
//   - an agent, attestations and its network policy's drops and repairs
//     on its own host (workload.attest, netpol.dropped, netpol.drift;
//     target itself);
//   - an enforcement point (a proxy or SDK service, which a policy protects
//     or once protected), decisions about itself (authz.decision, target
//     itself);
//   - any shipper, its spool's bookkeeping (audit.entries_dropped,
//     audit.entry_lost), named as its own;
//   - another server replica, the server's own entries.
//
// Every other shipped entry is refused; the batch is acknowledged so the
// stream goes on, and one audit.ingest refusal per batch counts what was
// refused, by action.
//
// Each spool stream has an owner (the first identity to ship it) and a
// high-water sequence number, so a retried batch is not stored twice, a
// stream cannot be continued by another identity, and entries lost on the
// way show as an audit.ingest.gap entry. The stream table is rebuilt at
// start from a snapshot written with every checkpoint (Snapshot) plus the
// entries appended after it. One identity ships at most
// MaxStreamsPerIdentity active streams.
//
// The server authenticates the caller (its SVID), bounds the body
// (MaxBatchBytes) and translates the errors into HTTP statuses; DecodeBatch
// and Take do the rest.
package intake
