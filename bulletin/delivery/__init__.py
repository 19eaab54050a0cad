"""The send use case: one path from a confirmed plan to an outcome, for `send` and `run`.

`bulletin send` and `bulletin run` both plan under the send lock, then hand the plan the user
confirmed (or the schedule decided) to `deliver`. It sends exactly that plan and returns a
`SendOutcome`: the report, the exit code, and the sentences that say what happened. The
callers only print them. The "nothing to send" rule and the outcome → exit-code mapping live
here and nowhere else.

The features' hooks run on this path too: the approval gate (issue 17) before anything is
sent, then, in `execute` as a send is created or resumed, its public page (issue 21) and the
version and approvals it goes out under (issue 17); each recipient's message carries its own
signed "Was this useful?" link (issue 18).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bulletin.config import Settings
from bulletin.errors import ExitCode
from bulletin.ledger.states import State
from bulletin.send import Plan, Report, SendLock, execute
from bulletin.transports import Waiter


@dataclass(frozen=True)
class SendOutcome:
    report: Report
    transport: str
    nothing_to_send: bool = False  # a resumed send with nobody left to send to

    @property
    def unknown(self) -> int:
        """Recipients whose fate is unknown: this run's lost answers and earlier runs' rows."""
        return len(self.report.unknown) + len(self.report.stale_unknown)

    @property
    def unknown_in_send(self) -> int:
        return self.report.counts.get(State.UNKNOWN, 0)

    @property
    def exit_code(self) -> ExitCode:
        if self.report.interrupted:
            return ExitCode.INTERRUPTED
        # Unknown recipients from an earlier run count too: the send ends with them (issue 11).
        if self.report.failed or self.unknown or self.unknown_in_send:
            return ExitCode.PARTIAL
        return ExitCode.OK

    @property
    def verb(self) -> str:
        return "written to the outbox" if self.transport == "outbox" else "accepted"

    @property
    def summary(self) -> str:
        """What the send did, in one sentence (`bulletin send`'s last line)."""
        r = self.report
        if self.nothing_to_send:
            unknown = self.unknown_in_send
            return f"Nothing to send: send #{r.send_id} has no pending recipients" + (
                f"; {unknown} unknown (use --resend-unknown if they never arrived)."
                if unknown
                else "."
            )
        return (
            f"Send #{r.send_id}: {r.accepted} {self.verb}, {len(r.failed)} failed, "
            f"{self.unknown} unknown, {r.pending_left} still pending"
            + (f", {r.dropped} dropped (suppressed)" if r.dropped else "")
            + (f", {r.left} left the list (not sent)" if r.left else "")
            + "."
        )

    def brief(self, shown: str, resumed: bool) -> str:
        """The same for a log line of `bulletin run` (only what is not zero, beyond the basics)."""
        r = self.report
        return (
            f"{'Resumed' if resumed else 'Sent'} {shown} (send #{r.send_id}): "
            f"{r.accepted} {self.verb}, {len(r.failed)} failed, {self.unknown} unknown"
            + (f", {r.dropped} dropped (suppressed)" if r.dropped else "")
            + (f", {r.pending_left} still pending" if r.pending_left else "")
        )

    @property
    def details(self) -> list[str]:
        """One line per recipient who failed or whose fate is unknown."""
        r = self.report
        return [
            *(
                f"unknown: {email} (an earlier run stopped mid-request; not re-sent — check the "
                "transport's activity log, then use --resend-unknown if it never arrived)"
                for email in r.stale_unknown
            ),
            *(f"failed: {email}: {error}" for email, error in r.failed),
            *(
                f"unknown: {email}: no answer from the transport; not re-sent automatically"
                for email in r.unknown
            ),
        ]


def deliver(
    plan: Plan,
    settings: Settings,
    lock: SendLock,
    *,
    new_send: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    waiter: Waiter | None = None,
) -> SendOutcome:
    """Send the confirmed `plan` under the held send `lock`; never more than it counted.

    The lock is the message's (`send_lock(db, message)`): on PostgreSQL other processes may
    share the send, each under its own lease, and none sends anyone twice."""
    if not lock.held:
        raise RuntimeError("deliver() needs the send lock held by the caller")
    if plan.approval is None:  # sign-off (issue 17): no path to the transport skips it
        from bulletin import approval

        plan.approval = approval.for_send(plan.checked, settings, plan.checked.message.name)
    nothing = plan.to_send == 0 and plan.resume is not None
    report = execute(
        plan, settings, new_send=new_send, progress=progress, waiter=waiter, locked=lock
    )
    return SendOutcome(report, plan.transport.name, nothing)
