"""Wire-faithful local stand-ins for the providers Cakra hands messages to.

One subpackage per simulator (:mod:`cakra.simulators.smtp`, the email
relay). Each talks to the system only as the real provider would: it takes
what Cakra sends over the provider's protocol and reports back over HTTP to
Cakra's webhooks, signed as any provider signs (:mod:`cakra.security.signing`).
None imports the layers it stands outside of (api, delivery, enforcement...),
and each listens and posts on this machine only (:mod:`cakra.simulators.loopback`).
Their ``cakra`` commands are in ``management/commands``.
"""
