from tests.e2e.conftest import Beamline, STANDBY, ON, RUNNING
import tango, time

def test_probe(beamline: Beamline) -> None:
    beamline.open_session()
    m = beamline.meta
    mgr = beamline.manager
    bad = 0
    n = 0
    t = time.monotonic()
    while time.monotonic() - t < 1:
        n += 1
        s = f"s{n}"
        m.write_attribute("sample", s)
        got = mgr.read_attribute("sampleName").value
        if got != s:
            bad += 1
            print(n, s, got)
    print("n", n, "bad", bad)
