# SPDX-License-Identifier: Apache-2.0
"""A fake Elasticsearch, written from the documented _bulk API (no Elasticsearch can run here):
POST /_bulk with NDJSON action/source pairs ending in a newline, answering 200 with
{"took", "errors", "items": [{<op>: {"_index", "status", "result" | "error"}}]}, one item per
action in order. `item_status(doc, attempt)` decides each document's status (201, or an error
such as 400 mapper_parsing_exception or 429 es_rejected_execution_exception).
"""
import json

from logs_util import FakeBackend


class FakeElasticsearch(FakeBackend):
    """Elasticsearch's POST /_bulk: NDJSON action/source pairs, answers 200 with errors and a
    status per item. `fail_items(pred)` marks documents that fail with the status pred returns."""

    def __init__(self):
        super().__init__()
        self.docs = []
        self.item_status = lambda doc, attempt: 201
        self.attempts = {}

    def handle(self, path, headers, body):
        if not path.startswith("/_bulk"):
            return 404, "application/json", b'{"error":"no handler"}'
        lines = body.split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        else:
            return 400, "application/json", \
                b'{"error":{"type":"illegal_argument_exception","reason":"The bulk request must '\
                b'be terminated by a newline [\\n]"},"status":400}'
        items, errors = [], False
        for i in range(0, len(lines), 2):
            action = json.loads(lines[i])
            (op, meta), = action.items()
            doc = json.loads(lines[i + 1])
            key = doc.get("message")
            with self.lock:
                self.attempts[key] = self.attempts.get(key, 0) + 1
                st = self.item_status(doc, self.attempts[key])
            item = {"_index": meta["_index"], "status": st}
            if st < 300:
                with self.lock:
                    self.docs.append((meta["_index"], doc))
                item["result"] = "created"
            else:
                errors = True
                item["error"] = ({"type": "mapper_parsing_exception", "reason": "failed to parse"}
                                 if st == 400 else
                                 {"type": "es_rejected_execution_exception", "reason": "queue full"})
            items.append({op: item})
        out = json.dumps({"took": 1, "errors": errors, "items": items}).encode()
        return 200, "application/json", out
