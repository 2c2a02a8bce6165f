"""A real HTTP server that behaves like the parts of Edge Impulse Studio the block uses.

It serves samples made from generated audio, validates structured labels exactly like Studio
(inclusive endIndex, integer indices within the sample, no gaps; overlaps allowed, later wins),
records every request and write, and can inject faults. Paths and JSON follow
../shared/docs/studio-contract.md (sections 4, 5 and 10).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import numpy as np

from audio import wav_bytes
from loopback import LoopbackServer

PROJECT_ID = 12345
CREATED = "2024-05-01T10:00:00.000Z"


@dataclass
class EmuSample:
    """A sample as Studio stores it: one array per axis at ``frequency_hz``."""

    sample_id: int
    filename: str
    frequency_hz: int
    channels: list[np.ndarray]
    sensors: list[dict] = field(default_factory=lambda: [{"index": 0, "name": "audio", "units": "wav"}])
    metadata: dict[str, str] = field(default_factory=dict)
    structured_labels: list[dict] | None = None
    label: str = ""  # the plain (single) label; Studio ignores it while structured labels exist
    is_disabled: bool = False
    wav_override: bytes | None = None  # served instead of the encoded audio (corrupt files)

    @property
    def values_count(self) -> int:
        return len(self.channels[0])


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: object
    headers: dict[str, str]


@dataclass
class Write:
    """One accepted write: kind is structured-labels, metadata, propose-changes, edit-label, disable or enable."""

    kind: str
    sample_id: int
    body: dict


class StudioState:
    def __init__(self, api_key: str):
        self.api_key = api_key
        self.samples: dict[int, EmuSample] = {}
        self.proposals: dict[tuple[int, int], dict] = {}
        self.requests: list[Request] = []
        self.writes: list[Write] = []
        self.rejected: list[tuple[int, str]] = []
        # fault(method, path) -> None, or (status, headers, body) to answer instead, or "drop"
        self.fault = None
        self.latency_s = 0.0
        # When set, the key is revoked once this many writes were accepted: every later request answers 401.
        self.revoke_key_after_writes: int | None = None
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0  # requests being answered now, and the most at once
        self.connections: set[tuple[str, int]] = set()  # client addresses seen: one per TCP connection

    def add(self, sample: EmuSample) -> EmuSample:
        self.samples[sample.sample_id] = sample
        return sample

    def labels_of(self, sample_id: int) -> list[dict] | None:
        return self.samples[sample_id].structured_labels

    def writes_of(self, kind: str) -> list[Write]:
        return [w for w in self.writes if w.kind == kind]


def validate_structured_labels(labels: object, values_count: int) -> list[dict]:
    """Studio's rules (verifyStructuredLabels / calculateAllStructuredLabels); returns stored runs."""
    if not isinstance(labels, list):
        raise ValueError("structuredLabels should be an array")
    owner: list[str | None] = [None] * values_count
    for i, item in enumerate(labels):
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            raise ValueError(f'(index {i}) "label" should be a string')
        for key in ("startIndex", "endIndex"):
            value = item.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f'(index {i}) "{key}" should be an integer number')
            if value < 0:
                raise ValueError(f'(index {i}) "{key}" should be 0 or higher')
            if value >= values_count:
                raise ValueError(f'(index {i}) "{key}" is out of bounds, max. index is {values_count - 1}')
        if item["startIndex"] > item["endIndex"]:
            raise ValueError(f'(index {i}) "startIndex" should be lower than or equal to "endIndex"')
        owner[item["startIndex"] : item["endIndex"] + 1] = [item["label"]] * (item["endIndex"] - item["startIndex"] + 1)
    runs: list[dict] = []
    for ix, label in enumerate(owner):
        if label is None:
            raise ValueError(f"structuredLabels: index {ix} does not have a label. "
                             "Labels should cover the complete sample, there cannot be any gaps in the labels.")
        if runs and runs[-1]["label"] == label:
            runs[-1]["endIndex"] = ix
        else:
            runs.append({"startIndex": ix, "endIndex": ix, "label": label})
    return runs


def _project() -> dict:
    return {"id": PROJECT_ID, "name": "audio-ai-labeling-test", "description": "", "created": CREATED,
            "owner": "Example Org", "ownerIsDeveloperProfile": False, "collaborators": [],
            "labelingMethod": "single_label", "metadata": {}, "isEnterpriseProject": True, "whitelabelId": None,
            "tier": "enterprise", "hasPublicVersion": False, "isPublic": False, "allowsLivePublicAccess": False,
            "indPauseProcessingSamples": False, "publicProjectListed": False}


def _sample_json(s: EmuSample, labels: list[dict] | None, metadata: dict[str, str], label: str,
                 is_disabled: bool) -> dict:
    interval = 1000.0 / s.frequency_hz
    total_ms = s.values_count * interval
    out = {"id": s.sample_id, "filename": s.filename, "signatureValidate": False, "created": CREATED,
           "lastModified": CREATED, "category": "training", "coldstorageFilename": f"ei/{s.filename}.json",
           "label": label, "intervalMs": interval,
           "frequency": float(s.frequency_hz), "originalIntervalMs": interval,
           "originalFrequency": float(s.frequency_hz), "deviceType": "EDGE_IMPULSE_CLI", "sensors": s.sensors,
           "valuesCount": s.values_count, "totalLengthMs": total_ms, "added": CREATED, "boundingBoxes": [],
           "boundingBoxesType": "object_detection", "chartType": "chart", "isDisabled": is_disabled,
           "isProcessing": False, "processingError": False, "isCropped": False, "metadata": metadata,
           "projectId": PROJECT_ID, "sha256Hash": "0" * 64,
           "datastreams": [{"index": 0, "chartType": "chart", "intervalMs": interval,
                            "frequencyHz": float(s.frequency_hz), "sensors": s.sensors,
                            "valuesCount": s.values_count, "totalLengthMs": total_ms}]}
    if labels:
        out["structuredLabels"] = labels
        out["structuredLabelsList"] = sorted({lab["label"] for lab in labels})
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stalls
    state: StudioState

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        st = self.state
        with st.lock:
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            st.connections.add(self.client_address)
        try:
            self._handle_counted(method)
        finally:
            with st.lock:
                st.in_flight -= 1

    def _handle_counted(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        st = self.state
        with st.lock:
            st.requests.append(Request(method, url.path, query, body, dict(self.headers)))
        if st.latency_s:
            time.sleep(st.latency_s)
        fault = st.fault(method, url.path) if st.fault else None
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            status, headers, payload = fault
            return self._json(payload, status, headers)
        with st.lock:
            revoked = st.revoke_key_after_writes is not None and len(st.writes) >= st.revoke_key_after_writes
        if revoked or self.headers.get("x-api-key") != st.api_key:
            return self._json({"success": False, "error": "Invalid API key"}, 401)
        try:
            self._route(method, url.path, query, body)
        except KeyError as exc:
            self._json({"success": False, "error": f"Sample with ID {exc.args[0]} not found"})

    def _route(self, method: str, path: str, query: dict, body) -> None:
        st = self.state
        if path == "/v1/api/projects":
            return self._json({"success": True, "projects": [_project()]})
        if path == "/v1/api/projects/api-key-info":
            return self._json({"success": True, "apiKeyId": 1, "projectId": PROJECT_ID, "role": "admin"})
        if path == f"/v1/api/{PROJECT_ID}":
            return self._json({"success": True, "project": _project()})
        m = re.fullmatch(rf"/v1/api/{PROJECT_ID}/raw-data/ai-actions-preview/(\d+)/proposed-changes", path)
        if m:
            job = int(m.group(1))
            items = [{"sampleId": sid, "step": 1, "proposedChanges": ch}
                     for (j, sid), ch in st.proposals.items() if j == job]
            return self._json({"success": True, "proposedChanges": items})
        m = re.fullmatch(rf"/v1/api/{PROJECT_ID}/raw-data/(\d+)(/[a-z-]+)?", path)
        if not m:
            return self._json({"success": False, "error": f"no route {method} {path}"}, 404)
        sid, action = int(m.group(1)), m.group(2) or ""
        if sid not in st.samples:
            raise KeyError(sid)
        sample = st.samples[sid]
        if method == "GET" and action == "":
            return self._get_sample(sample, query)
        if method == "GET" and action == "/wav":
            return self._wav(sample, query)
        if method == "POST" and action in ("/structured-labels", "/metadata", "/propose-changes", "/edit-label",
                                           "/disable", "/enable"):
            return self._write(sample, action[1:], body)
        return self._json({"success": False, "error": f"no route {method} {path}"}, 404)

    def _get_sample(self, sample: EmuSample, query: dict) -> None:
        labels, metadata = sample.structured_labels, dict(sample.metadata)
        label, is_disabled = sample.label, sample.is_disabled
        job = query.get("proposedActionsJobId")
        proposal = self.state.proposals.get((int(job), sample.sample_id)) if job else None
        if proposal:
            labels = proposal.get("structuredLabels", labels)
            metadata = proposal.get("metadata", metadata)
            label = proposal.get("label", label)
            is_disabled = proposal.get("isDisabled", is_disabled)
        limit = int(query.get("limitPayloadValues") or sample.values_count)
        values = [[float(v)] for v in sample.channels[0][:limit]]
        payload = {"device_type": "EDGE_IMPULSE_CLI", "sensors": sample.sensors, "values": values,
                   "intervalMs": 1000.0 / sample.frequency_hz, "frequencyHz": float(sample.frequency_hz)}
        self._json({"success": True, "sample": _sample_json(sample, labels, metadata, label, is_disabled),
                    "payload": payload,
                    "totalPayloadLength": sample.values_count,
                    "datastreamPayloads": [{"index": 0, "payload": payload,
                                            "totalPayloadLength": sample.values_count}]})

    def _wav(self, sample: EmuSample, query: dict) -> None:
        axis = int(query["axisIx"])
        if not any(s["index"] == axis and s["units"] == "wav" for s in sample.sensors):
            return self._json({"success": False, "error": "Sample does not have an audio axis"})
        data = sample.wav_override if sample.wav_override is not None else wav_bytes(
            sample.channels[axis], sample.frequency_hz)
        self._send(200, data, "audio/wav")

    def _write(self, sample: EmuSample, kind: str, body: dict) -> None:
        st = self.state
        try:
            if kind == "structured-labels":
                runs = validate_structured_labels(body.get("structuredLabels"), sample.values_count)
            elif kind == "metadata":
                metadata = body.get("metadata") or {}
                if not all(isinstance(v, str) for v in metadata.values()):
                    raise ValueError("metadata values should be strings")
            elif kind == "edit-label":
                if not isinstance((body or {}).get("label"), str):
                    raise ValueError("label should be a string")
            elif kind in ("disable", "enable"):
                body = {}
            else:
                if not isinstance(body.get("jobId"), int):
                    raise ValueError("jobId is required")
                changes = body.get("proposedChanges") or {}
                if "structuredLabels" in changes:
                    validate_structured_labels(changes["structuredLabels"], sample.values_count)
        except ValueError as exc:
            with st.lock:
                st.rejected.append((sample.sample_id, str(exc)))
            return self._json({"success": False, "error": str(exc)})
        with st.lock:
            st.writes.append(Write(kind, sample.sample_id, body))
            if kind == "structured-labels":
                sample.structured_labels = runs
            elif kind == "metadata":
                sample.metadata = dict(body["metadata"])
            elif kind == "edit-label":
                sample.label = body["label"]
            elif kind in ("disable", "enable"):
                sample.is_disabled = kind == "disable"
            else:
                st.proposals[(body["jobId"], sample.sample_id)] = body["proposedChanges"]
        self._json({"success": True})

    def _json(self, payload: dict, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class StudioEmulator(LoopbackServer):
    """Start with ``with StudioEmulator(key) as studio:``; ``studio.endpoint`` is EI_API_ENDPOINT."""

    def __init__(self, api_key: str):
        self.state = StudioState(api_key)
        super().__init__(type("Handler", (_Handler,), {"state": self.state}))
        self.endpoint = f"{self.base_url}/v1"
