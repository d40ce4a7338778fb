"""The tamper-evident audit log: typed events appended to a hash-chained, signed JSON-lines file.

- ``events``: what is recorded (``AuditEvent`` and the log's own actions);
- ``chain``: appending (hash chain, signatures, head, checkpoints, torn-line recovery), export;
- ``verify``: the chain of one file and of the whole log with its archives and witnesses;
- ``retention``: moving old records to ``archive/`` and anchoring the live log;
- ``witness``: outside copies of the checkpoints (files, syslog);
- ``queries``: a question or search metered and audited by one recorder;
- ``setup``: opening a data directory's log with its key and witnesses.
"""

from appliance.audit.chain import AuditLog
from appliance.audit.events import CHECKPOINT, CUT, RECOVERED, RETENTION, AuditEvent, audit_admin
from appliance.audit.queries import QueryRecorder, UsageMeter, audit_query
from appliance.audit.records import GENESIS, Signer, record_hash
from appliance.audit.retention import RETENTION_EVERY_S, keep_retention, rotate
from appliance.audit.setup import audit_key, open_audit_log
from appliance.audit.verify import VerifyResult, verify_file, verify_log
from appliance.audit.witness import FileWitness, SyslogWitness, Witnesses, parse_witness

__all__ = [
    "CHECKPOINT",
    "CUT",
    "GENESIS",
    "RECOVERED",
    "RETENTION",
    "RETENTION_EVERY_S",
    "AuditEvent",
    "AuditLog",
    "FileWitness",
    "QueryRecorder",
    "Signer",
    "SyslogWitness",
    "UsageMeter",
    "VerifyResult",
    "Witnesses",
    "audit_admin",
    "audit_key",
    "audit_query",
    "keep_retention",
    "open_audit_log",
    "parse_witness",
    "record_hash",
    "rotate",
    "verify_file",
    "verify_log",
]
