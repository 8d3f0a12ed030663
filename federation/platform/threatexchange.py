"""python-threatexchange extension: sync a feed from a federation platform node.

Load it into a stock ``threatexchange`` install (PyPI)::

    threatexchange config extensions add federation.platform.threatexchange
    threatexchange config collab edit federation tid --create --url http://127.0.0.1:8080/ --feed tid
    threatexchange fetch
    threatexchange match photo upload.jpg

The same ``SignalExchangeAPI`` class plugs into the Hasher-Matcher-Actioner.

How a fetch works. The node's change stream (``GET /changes``) is read from
the checkpoint's ``seq`` in pages. For every (signal type, hash) a page
touches, the adapter asks the node for the hash's *current* active records
(``POST /lookup``, exact) and emits the full replacement value, or ``None``
-- a tombstone -- when no active record is left. Emitting whole current
values (never patches) makes every delta idempotent and order-safe: a hash
withdrawn from one case but still active in another stays; one withdrawn
everywhere disappears from the index; replaying a page changes nothing.
The checkpoint advances only past pages whose values were emitted.

A node started with ``platform serve --auth`` needs a platform token: put
it in an environment variable and name the variable in the collab
(``--token-env FEDERATION_PLATFORM_TOKEN``); the secret itself never goes
into threatexchange's config files. A missing variable, or a token the node
refuses, is a clear error when the API is set up (before ``fetch`` starts),
not threatexchange's "failed to fetch!".

Reporting back. ``report_opinion`` (the stock CLI's ``threatexchange label
--as-hash pdq -l false_positive COLLAB photo FILE``) and ``report_seen``
send a feedback report (``core.feedback``) to the feed's *publisher* --
``--report-url``, its feed URL, e.g. ``http://ch:8080/feeds/tid/`` -- with
the member token the publisher issued, from the variable named by
``--report-token-env``. An opinion's kind: a tag naming one of ``seen``,
``actioned``, ``false_positive``, ``disputed`` wins; else a negative opinion
is a false positive and a positive one ``actioned``. Its id is derived from
its content, so the same opinion sent twice is one report.

Signal types: ``pdq`` maps to PDQ, ``md5`` to threatexchange's
``video_md5`` and ``sha256`` to ``video_sha256`` (hashes of the file bytes), and ``vpdq`` to its ``vpdq``
signal (the extension ``threatexchange.extensions.vpdq``, which needs the
``vpdq`` package). A vpdq record is one segment of a video (at most 80
frames, docs/PROTOCOL.md section 4): each segment becomes one VPDQ signal
of its frames, so its key can be computed from the change alone and a
withdrawn segment tombstoned. A video of up to 80 frames is therefore one
signal; a longer one is several, each matched by threatexchange on its own
(its query percentage counts the query's frames against that segment), so
only the node's own video lookup matches a long video as a whole. sha1
and PhotoDNA have no stock signal type and are skipped.
"""
# No "from __future__ import annotations": threatexchange reads dataclass field types at run time.

import http.client
import json
import os
import typing as t
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from threatexchange.cli.exceptions import CommandError
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.auth import SignalExchangeAPIInvalidAuthException, SignalExchangeAPIMissingAuthException
from threatexchange.exchanges.collab_config import CollaborationConfigWithDefaults
from threatexchange.exchanges.signal_exchange_api import SignalExchangeAPIWithSimpleUpdates
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.signal_base import SignalType

from federation.core.errors import AuthError, FederationError, InputError, MalformedError, TransportError
from federation.core.feedback import kind_of_opinion, parse_report
from federation.core.vpdq import decode_segment, signal_string
from federation.net.feedback_client import FeedbackClient

# federation hash type -> threatexchange SignalType.get_name()
SIGNAL_NAMES = {"pdq": "pdq", "md5": "video_md5", "sha256": "video_sha256", "vpdq": "vpdq"}
# Reports back name a record's hash; a vPDQ signal is a segment's frames, not
# a record hash, so video opinions are not reported (report on the node instead).
HASH_TYPES = {v: k for k, v in SIGNAL_NAMES.items() if k != "vpdq"}


def signal_value(hash_type: str, hash_hex: str) -> str:
    """The threatexchange signal string of a record's hash: hex as it is,
    except a vpdq segment, which becomes the VPDQ signal of its frames."""
    if hash_type != "vpdq":
        return hash_hex
    try:
        return signal_string(decode_segment(bytes.fromhex(hash_hex)).frames)
    except ValueError:
        raise MalformedError(f"change stream: vpdq hash {hash_hex[:40]!r}... is not hex") from None
PAGE = 500
LOOKUP_BATCH = 1000
TIMEOUT = 30


@dataclass
class _FederationRequired:
    url: str = field(metadata={"help": "base URL of the federation platform node, e.g. http://127.0.0.1:8080/"})


@dataclass
class FederationCollabConfig(CollaborationConfigWithDefaults, _FederationRequired):
    feed: t.Optional[str] = field(
        default=None, metadata={"help": "only this followed feed (default: every feed the node mirrors)",
                                "metavar": "FEED"})
    token_env: t.Optional[str] = field(
        default=None, metadata={"help": "environment variable holding a platform bearer token "
                                        "(for a node started with --auth)", "metavar": "VAR"})
    report_url: t.Optional[str] = field(
        default=None, metadata={"help": "the feed's URL on its publisher's node, where opinions are reported "
                                        "(e.g. http://ch:8080/feeds/tid/)", "metavar": "URL"})
    report_token_env: t.Optional[str] = field(
        default=None, metadata={"help": "environment variable holding the member token the publisher issued "
                                        "for the feed (to report opinions)", "metavar": "VAR"})


@dataclass
class FederationCheckpoint(state.FetchCheckpointBase):
    seq: int = 0   # last change stream sequence number merged
    time: int = 0  # publication time of that change

    def get_progress_timestamp(self) -> t.Optional[int]:
        return self.time or None


@dataclass
class FederationSignalMetadata(state.FetchedSignalMetadata):
    """Every active record of one hash: (feed, case, labels, version added)."""

    records: t.List[t.Tuple[str, str, t.Tuple[str, ...], int]] = field(default_factory=list)

    def get_as_opinions(self) -> t.Sequence[state.SignalOpinion]:
        return [state.SignalOpinion(False, state.SignalOpinionCategory.POSITIVE_CLASS, set(labels))
                for _feed, _case, labels, _version in self.records]

    def __str__(self) -> str:
        cases = ",".join(sorted({c for _f, c, _l, _v in self.records}))
        return f"{super().__str__()} cases={cases}"


def _http(url: str, body: dict | None = None, token: str | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "federation-threatexchange"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise AuthError(f"{url}: the platform node refused {'the token' if token else 'a request without a token'}"
                            f" (HTTP {e.code})") from None
        raise TransportError(f"{url}: {e}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise TransportError(f"{url}: {e}") from e
    try:
        return json.loads(raw)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise MalformedError(f"{url}: answer is not JSON: {e}") from e


def page_updates(changes: list[dict], current: dict[tuple[str, str], list[dict]], feed: str | None,
                 wanted: set[str]) -> dict[tuple[str, str], t.Optional[FederationSignalMetadata]]:
    """Pure: full replacement values (or ``None``) for the hashes a page touched."""
    out: dict[tuple[str, str], t.Optional[FederationSignalMetadata]] = {}
    for c in changes:
        name = SIGNAL_NAMES.get(c["type"])
        if name is None or name not in wanted or (feed is not None and c["feed"] != feed):
            continue
        key = (name, signal_value(c["type"], c["hash"]))
        records = [(m["feed"], m["case"], tuple(m["labels"]), m["added_version"])
                   for m in current.get((c["type"], c["hash"]), [])
                   if feed is None or m["feed"] == feed]
        out[key] = FederationSignalMetadata(sorted(records)) if records else None
    return out


class FederationSignalExchangeAPI(
    SignalExchangeAPIWithSimpleUpdates[FederationCollabConfig, FederationCheckpoint, FederationSignalMetadata]
):
    """Fetch adds and withdrawals of a federation feed as PDQ / MD5 signals."""

    def __init__(self, collab: FederationCollabConfig):
        self.collab = collab
        self.base = collab.url.rstrip("/") + "/"

    @classmethod
    def get_name(cls) -> str:
        return "federation"

    @staticmethod
    def get_config_cls() -> t.Type[FederationCollabConfig]:
        return FederationCollabConfig

    @staticmethod
    def get_checkpoint_cls() -> t.Type[FederationCheckpoint]:
        return FederationCheckpoint

    @staticmethod
    def get_record_cls() -> t.Type[FederationSignalMetadata]:
        return FederationSignalMetadata

    def _token(self) -> t.Optional[str]:
        if not self.collab.token_env:
            return None
        token = os.environ.get(self.collab.token_env)
        if not token:
            raise SignalExchangeAPIMissingAuthException(type(self), env_hint=self.collab.token_env)
        return token

    @classmethod
    def for_collab(cls, collab: FederationCollabConfig) -> "FederationSignalExchangeAPI":
        """The API for ``collab``, its platform token checked first: threatexchange
        calls this before a fetch starts, outside the handler that would turn
        any error into "failed to fetch!", so a missing variable or a refused
        token is reported as what it is (an unreachable node is left to the
        fetch, which says so)."""
        api = cls(collab)
        token = api._token()
        try:
            _http(api.base + "changes?" + urllib.parse.urlencode({"after": 0, "limit": 1}), token=token)
        except AuthError as e:
            hint = (f"; set the platform token in ${collab.token_env}" if collab.token_env
                    else "; the node needs a platform token: name its variable with --token-env")
            raise SignalExchangeAPIInvalidAuthException(cls, f"{e}{hint}") from None
        except FederationError:  # unreachable or odd: the fetch itself reports it
            pass
        return api

    # ---- reporting back (``core.feedback``; the publisher's ``net.feedback_api``) ----

    def _report(self, s_type: t.Type[SignalType], signal: str, kind: str, labels: t.Iterable[str] = ()) -> dict:
        name = s_type.get_name()
        if name not in HASH_TYPES:
            raise CommandError.user(f"signal type {name} has no federation hash type (known: "
                                    f"{', '.join(sorted(HASH_TYPES))})")
        if not self.collab.report_url or not self.collab.report_token_env:
            raise CommandError.user(f"collab {self.collab.name}: set --report-url (the feed's URL on its publisher's "
                                    "node) and --report-token-env (the variable holding its member token) to report")
        token = os.environ.get(self.collab.report_token_env)
        if not token:
            raise SignalExchangeAPIMissingAuthException(type(self), env_hint=self.collab.report_token_env)
        try:
            report = parse_report({"kind": kind, "type": HASH_TYPES[name], "hash": s_type.validate_signal_str(signal),
                                   "labels": [x for x in labels if x]}, "opinion", need_id=False)
            return FeedbackClient(self.collab.report_url, token).report([report])["reports"][0]
        except AuthError as e:
            raise SignalExchangeAPIInvalidAuthException(type(self), f"{e} (token from ${self.collab.report_token_env})"
                                                        ) from None
        except (ValueError, InputError) as e:  # a signal threatexchange calls valid but we do not
            raise CommandError.user(f"cannot report {name} {signal[:80]!r}: {e}") from None
        except FederationError as e:
            raise CommandError(f"report to {self.collab.report_url} failed ({e.kind}): {e}",
                               3 if isinstance(e, TransportError) else 1) from None

    def report_seen(self, s_type: t.Type[SignalType], signal: str,
                    metadata: t.Optional[state.FetchedSignalMetadata] = None) -> None:
        """Report that ``signal`` matched on this platform (kind ``seen``)."""
        self._report(s_type, signal, "seen")

    def report_opinion(self, s_type: t.Type[SignalType], signal: str, opinion: state.SignalOpinion) -> None:
        """Report an opinion on ``signal`` (see the module for the kind it becomes)."""
        try:
            kind = kind_of_opinion(opinion.category.name, opinion.tags)
        except InputError as e:
            raise CommandError.user(str(e)) from None
        self._report(s_type, signal, kind, [x for x in opinion.tags if x.lower() != kind])

    def _current(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], list[dict]]:
        out: dict[tuple[str, str], list[dict]] = {}
        keys_l = sorted(keys)
        for i in range(0, len(keys_l), LOOKUP_BATCH):
            chunk = keys_l[i:i + LOOKUP_BATCH]
            queries = [{"type": ty, "hash": h, **({"threshold": 0} if ty == "pdq" else {})} for ty, h in chunk]
            res = _http(self.base + "lookup", {"queries": queries}, self._token())["results"]
            for (ty, h), r in zip(chunk, res):
                out[(ty, h)] = r["matches"]
        return out

    def fetch_iter(self, supported_signal_types: t.Sequence[t.Type[SignalType]],
                   checkpoint: t.Optional[FederationCheckpoint]) -> t.Iterator[
            state.FetchDelta[t.Tuple[str, str], FederationSignalMetadata, FederationCheckpoint]]:
        wanted = {s.get_name() for s in supported_signal_types}
        after = checkpoint.seq if checkpoint else 0
        while True:
            q = {"after": after, "limit": PAGE}
            if self.collab.feed:
                q["feed"] = self.collab.feed
            page = _http(self.base + "changes?" + urllib.parse.urlencode(q), token=self._token())
            changes = page["changes"]
            if not changes:
                return
            keys = {(c["type"], c["hash"]) for c in changes if SIGNAL_NAMES.get(c["type"]) in wanted}
            updates = page_updates(changes, self._current(keys), self.collab.feed, wanted)
            after = changes[-1]["seq"]
            yield state.FetchDelta(updates, FederationCheckpoint(after, changes[-1]["time"]))
            if after >= page["head"]:
                return


TX_MANIFEST = ThreatExchangeExtensionManifest(apis=(FederationSignalExchangeAPI,))
