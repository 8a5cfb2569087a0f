"""``cakra bench``: the whole pipeline under load, measured in one run; one module per phase.

Intake over HTTP through the batch API (as the ETLE back office would) →
notice → every channel the bench plan uses, into the loopback simulators,
on whatever database and broker the settings name. The web server, the
Celery worker and the simulators run as real child processes; the bench's
own process only drives the intake, watches the database and samples memory.

- ``config``: what a run is asked to do; ``ownership``: what the bench may remove;
- ``seeding``, ``photos``, ``statistics``: the setup, the evidence, planner statistics;
- ``supervision``: the system's processes and what they cost;
- ``ceiling``: a bare client's rate against a simulator;
- ``driver``: the intake posted over HTTP;
- ``measurement``: when a delivery is final, latency, lost and duplicated messages;
- ``faults``: kills, a broker restart and terminated connections, on a seeded schedule;
- ``run``: the phases in order; it names no channel.
- ``channels``: one module per channel (seeding, simulator, ceiling, what it received).

Method and figures: docs/performance.md.
"""
