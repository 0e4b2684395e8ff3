"""GB/T 28181 over SIP: our own small RFC 3261 stack, the device-access server and its parts.

The stack is split so the cascade side (api/cascade/) can reuse it as a client: messages,
digest (both ends), transport, client transactions and MANSCDP bodies know nothing of the
registry; `server.SipServer` wires them for device access and reaches the registry only
through the `DeviceDirectory` and `Gb28181Events` interfaces.
"""
