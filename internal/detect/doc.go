// Package detect raises alerts from the audit log while an attack is under
// way: rules in YAML, each a CEL condition over an entry, optionally counted
// per group in a time window (threshold) or compared with what was seen in a
// baseline period (new terms).
//
// # Rules
//
//	rules:
//	  - name: denied-burst            # lower-case words and dashes
//	    description: one caller is refused again and again
//	    severity: high                # info, low, medium, high, critical
//	    actions: [authz.decision]     # optional: only these actions are looked at
//	    condition: entry.outcome == "denied"   # CEL; default true
//	    group_by: [actor.spiffe_id]   # optional: count or dedupe per group
//	    window: 1m                    # with threshold:
//	    threshold: 20                 #   fire at 20 matches within 1m, per group
//	  - name: new-service-edge
//	    severity: medium
//	    actions: [authz.decision]
//	    condition: entry.outcome == "success"
//	    new_terms:                    # fire when this combination is new
//	      fields: [actor.spiffe_id, target]
//	      baseline: 24h               # learned silently during the first 24h
//
// A condition sees `entry`: time (a timestamp), actor.spiffe_id, actor.user,
// action, target, outcome, reason, request_id, source, details (a map of
// strings). Fields for group_by and new_terms are the same paths
// (details.NAME for a detail).
//
// # Time
//
// Windows and baselines run on the entries' own times, in log order, so
// replaying a log gives the alerts the live run gave, and entries delivered
// late by a spool are counted in their window. Every entry is looked at;
// no window is skipped. If the engine falls behind the log, that lag is
// itself an alert (see Tailer).
//
// # Alerts
//
// Repeated firings of a rule for one group within its dedup span are merged
// into one alert (count and last seen move). Alert IDs derive from the rule,
// the group and the index of the entry that raised the alert, so a replay
// raises nothing new.
//
// # Running
//
// Detector is what the server runs on the replica that keeps the log: the
// rules (or the defaults), a Tailer over the log, the rules' sinks, and a
// detect.alert entry in the log for each new alert. AlertAPI serves the
// alerts to operators (list, read, change status).
package detect
