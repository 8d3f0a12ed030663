"""Review of feedback: the publisher turns reports into the feed.

``review`` takes the publisher's decisions per target (``core.feedback.Target``):

* **withdraw** (accept): one withdrawal per target, all published as *one*
  version like any other batch -- signed, sealed, travelling to every mirror
  as a withdrawal -- and, in the same transaction (``FeedbackStore.resolver``
  as the publish's ``in_txn``), every open report the targets cover is marked
  ``withdrawn`` with that version. A crash before the commit leaves neither;
  after it, both (data first, the signed head last, as every publish).
* **reject**: the open reports the target covers are closed as ``rejected``;
  nothing is published (the records stay).

Every decision must answer at least one open report (a withdrawal nobody
reported is an ordinary ``federation publish``), and a withdrawal of a
target no active record matches is refused like any typo'd withdrawal:
nothing is published or closed when any decision is refused. The review is
appended to the audit log.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from federation.core.entries import WITHDRAW_REASONS, Withdraw
from federation.core.errors import InputError
from federation.core.feedback import Target
from federation.core.note import Signer
from federation.node.home import Home
from federation.store.feedback import FeedbackStore
from federation.store.publisher import Publisher, PublishResult
from federation.store.tokens import TokenStore


@dataclass
class ReviewResult:
    feed: str
    withdrawn: list[Target] = field(default_factory=list)
    rejected: list[Target] = field(default_factory=list)
    resolved: int = 0            # reports marked withdrawn by the published version
    closed: int = 0              # reports closed as rejected
    published: PublishResult | None = None


def _withdrawal(t: Target, reason: str) -> Withdraw:
    if t.by_case:
        return Withdraw(reason, 0, case=t.case)
    return Withdraw(reason, 0, t.hash_type, t.value, t.case)


def check_decisions(store: FeedbackStore, feed: str, withdraw: list[Target], reject: list[Target]) -> None:
    """``InputError`` unless every decision answers an open report, and no
    target is both withdrawn and rejected."""
    if not withdraw and not reject:
        raise InputError("name at least one --withdraw or --reject item")
    both = {t.describe() for t in withdraw} & {t.describe() for t in reject}
    if both:
        raise InputError(f"{', '.join(sorted(both))}: both withdrawn and rejected")
    for t in [*withdraw, *reject]:
        if store.covered(feed, [t]) == 0:
            raise InputError(f"{t.describe()}: no open report on feed {feed} is about it (see 'federation feedback "
                             f"list {feed} --state open'); a withdrawal nobody reported is an ordinary "
                             "'federation publish'")


def review(home: Home, feed: str, withdraw: list[Target], reject: list[Target], signer: Signer | None,
           reason: str = "hash_error") -> ReviewResult:
    """Apply the decisions (see the module); ``signer`` is needed when anything is withdrawn."""
    if reason not in WITHDRAW_REASONS:
        raise InputError(f"reason must be one of {', '.join(WITHDRAW_REASONS)}")
    pub = Publisher(home.publisher_db)
    store = FeedbackStore(home.publisher_db)
    audit = TokenStore(home.auth_db)
    out = ReviewResult(feed)
    try:
        pub.feed(feed)  # InputError for a feed this home does not publish
        check_decisions(store, feed, withdraw, reject)
        if withdraw:
            if signer is None:
                raise InputError("withdrawing needs the feed's log key")
            counted: list[int] = []
            out.published = pub.publish(feed, [_withdrawal(t, reason) for t in withdraw], signer,
                                        in_txn=FeedbackStore.resolver(feed, withdraw, counted))
            out.withdrawn, out.resolved = list(withdraw), sum(counted)
        if reject:
            out.closed = store.reject(feed, reject)
            out.rejected = list(reject)
        withdrawn = ", ".join(t.describe() for t in out.withdrawn) or "nothing"
        rejected = ", ".join(t.describe() for t in out.rejected) or "nothing"
        version = f"version {out.published.version}: " if out.published else ""
        audit.record_many("feedback-review", feed, None,
                          [f"{version}withdrew {withdrawn} ({out.resolved} reports resolved); "
                           f"rejected {rejected} ({out.closed} reports closed)"],
                          out.published.size if out.published else None)
    finally:
        audit.close()
        store.close()
        pub.close()
    return out
