from tests.e2e.conftest import Beamline, STANDBY, ON, RUNNING
import tango

def test_probe(beamline: Beamline) -> None:
    beamline.open_session()
    m = beamline.meta
    for v in ["é°", b"\xe9", "é".encode(), b"caf\xc3"]:
        try:
            m.write_attribute("sample", v)
            print(repr(v), "->", repr(m.read_attribute("sample").value))
        except tango.DevFailed as e:
            print(repr(v), "failed", e.args[0].reason, e.args[0].desc)
    mgr = beamline.manager
    for v in ["é°", b"\xe9 latin", "é".encode()]:
        try:
            mgr.command_inout("notifyInfo", v)
            print("notify", repr(v), "ok")
        except tango.DevFailed as e:
            print("notify", repr(v), "failed", e.args[0].reason, e.args[0].desc)
    store = beamline.outbox()
    from icatcore.outbox import Channel
    for msg in store.pending(Channel.ICATPLUS):
        print(msg.body[:300])
