"""The one reader of the configuration: tango-metadata's properties as written, typed
broker values, secrets from files or the environment (never shown).

Needs neither pytango nor stomp.py: icatcore is pure, adapters.secrets uses only os.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from icat_servers.adapters.secrets import ServerSecrets
from icat_servers.icatcore import config
from icat_servers.icatcore.config import BrokerAddress
from icat_servers.icatcore.errors import ConfigurationError
from icat_servers.icatcore.folders import data_folder

SECRET = "elogbook-s3cret-0123456789"
PASSCODE = "broker-s3cret-pass"

MANAGER: dict[str, list[str]] = {
    "beamlineID": ["id00"],
    "metaExperimentDevice": ["id00/metaexp/test"],
}


def manager(**extra: Sequence[str]) -> config.MetadataManagerConfig:
    return config.metadata_manager({**MANAGER, **extra})


def refused(properties: Mapping[str, Sequence[str]], **kw: object) -> str:
    with pytest.raises(ConfigurationError) as caught:
        config.metadata_manager(properties, **kw)  # type: ignore[arg-type]
    return str(caught.value)


class FakeSecrets:
    """A SecretSource over a dict of files and one of environment variables."""

    def __init__(
        self, files: Mapping[str, str] | None = None, environment: Mapping[str, str] | None = None
    ) -> None:
        self.files = dict(files or {})
        self.variables = dict(environment or {})
        self.read: list[str] = []

    def read_file(self, path: str) -> str:
        self.read.append(path)
        if path not in self.files:
            raise ConfigurationError(f"secret file {path} does not exist: create it")
        return self.files[path]

    def environment(self, name: str) -> str:
        return self.variables.get(name, "")


# -- tango-metadata's configuration, read as written ---------------------------------------


def test_the_original_readmes_pattern_with_scan_name_fills_in_the_dataset_name() -> None:
    pattern = "{dataRoot}/{proposal}/{beamlineID}/{sampleName}/{scanName}"

    settings = manager(dataFolderPattern=[pattern])

    assert settings.data_folder_pattern == pattern
    folder = data_folder(
        pattern,
        data_root="/data/visitor",
        proposal="hg123",
        beamline="id00",
        sample="lysozyme",
        dataset="sample_0001",
    )
    assert folder == "/data/visitor/hg123/id00/lysozyme/sample_0001"


def test_a_pattern_field_that_does_not_exist_is_still_refused_with_the_known_fields() -> None:
    message = refused({**MANAGER, "dataFolderPattern": ["{dataRoot}/{scan}"]})
    assert "unknown field(s) ['scan']" in message
    assert "{scanName}" in message and "{datasetName}" in message


def test_the_original_spelling_beamline_id_is_read_when_beamline_capital_id_is_absent() -> None:
    properties = {"beamlineId": ["ID21"], "metaExperimentDevice": ["id21/metaexp/1"]}
    assert config.metadata_manager(properties).beamline == "id21"
    assert config.meta_experiment({"beamlineId": ["id21"]}).beamline == "id21"


def test_beamline_capital_id_wins_over_the_original_spelling() -> None:
    assert manager(beamlineId=["id99"]).beamline == "id00"


def test_a_missing_beamline_is_refused_naming_the_documented_spelling() -> None:
    message = refused({"metaExperimentDevice": ["id00/metaexp/test"]})
    assert message.startswith("property beamlineID is missing")


def test_a_bad_beamline_under_the_original_spelling_is_refused_with_that_name() -> None:
    message = refused({"beamlineId": ["id 00"], "metaExperimentDevice": ["a/b/c"]})
    assert message.startswith("property beamlineId 'id 00' is not a beamline name")


def test_old_properties_are_accepted_and_listed_as_unused() -> None:
    settings = manager(
        globalHDFfiles=["true"], server=["icat.esrf.fr"], port=["443"], username=["reader"]
    )
    assert settings.unused == ("globalHDFfiles", "port", "server", "username")
    assert config.meta_experiment({"beamlineID": ["id00"], "port": ["1"]}).unused == ("port",)
    assert manager().unused == ()


def test_the_devices_read_the_old_and_the_secret_file_properties_from_the_database() -> None:
    for name in (*config.UNUSED, "beamlineId", "API_KEY_FILE", "queuePasscodeFile"):
        assert name in config.PROPERTY_NAMES
    for name in config.UNUSED:
        assert name in config.CLASS_PROPERTIES["MetadataManager"]
        assert name in config.DEVICE_PROPERTIES["MetaExperiment"]
    assert "queueURL" not in config.PROPERTY_NAMES
    assert config.nearest("queueURL", config.PROPERTY_NAMES) == "queueURLs"
    assert config.nearest("beamlineid", config.PROPERTY_NAMES) in ("beamlineID", "beamlineId")


# -- broker addresses and queue, parsed once -------------------------------------------------


def test_queue_urls_become_typed_addresses_with_the_default_port() -> None:
    settings = manager(queueURLs=["broker1:61614, broker2", "tcp://broker3:1", "[::1]:7"])
    assert settings.delivery.brokers == (
        BrokerAddress("broker1", 61614),
        BrokerAddress("broker2", 61613),
        BrokerAddress("broker3", 1),
        BrokerAddress("::1", 7),
    )
    assert [str(b) for b in settings.delivery.brokers][:2] == ["broker1:61614", "broker2:61613"]


def test_ssl_entries_mean_tls_and_mix_with_plain_ones_for_failover() -> None:
    settings = manager(
        queueURLs=["ssl://broker1:61614", "broker2:61613", "STOMP+SSL://[::1]:7", "stomp://b3:1"]
    )
    assert settings.delivery.brokers == (
        BrokerAddress("broker1", 61614, tls=True),
        BrokerAddress("broker2", 61613),
        BrokerAddress("::1", 7, tls=True),
        BrokerAddress("b3", 1),
    )
    assert str(settings.delivery.brokers[0]) == "ssl://broker1:61614"
    assert "ssl://broker1:61614" in repr(settings.delivery)
    assert settings.delivery.ca_file == ""


def test_queue_ca_file_is_an_absolute_path_read_as_class_or_device_property() -> None:
    assert "queueCAFile" in config.CLASS_PROPERTIES["MetaExperiment"]
    assert "queueCAFile" in config.CLASS_PROPERTIES["MetadataManager"]
    assert "queueCAFile" in config.SINGLE_VALUED
    settings = manager(queueURLs=["ssl://broker:61614"], queueCAFile=["/etc/icat/ca.pem"])
    assert settings.delivery.ca_file == "/etc/icat/ca.pem"
    message = refused({**MANAGER, "queueCAFile": ["ca.pem"]})
    assert "property queueCAFile 'ca.pem' is not an absolute path" in message


@pytest.mark.parametrize("entry", ["localhost:stomp", "host:0", "host:65536", "a/b:1", ":61613"])
def test_a_queue_url_that_is_not_host_port_is_refused(entry: str) -> None:
    message = refused({**MANAGER, "queueURLs": [entry]})
    assert f"queueURLs entry {entry!r} is not host:port: write e.g. localhost:61613" in message


def test_empty_queue_urls_mean_no_delivery_not_an_error() -> None:
    for value in ([], [""], ["  "]):
        assert manager(queueURLs=value).delivery.brokers == ()


def test_a_bare_queue_name_is_normalised_once_to_a_destination() -> None:
    assert manager(queueName=["icatIngest"]).delivery.queue == "/queue/icatIngest"
    assert manager(queueName=["/topic/x"]).delivery.queue == "/topic/x"
    assert manager().delivery.queue == "/queue/icatIngest"


@pytest.mark.parametrize("port", ["eighty", "70000", "-1"])
def test_a_jolokia_port_out_of_range_is_refused(port: str) -> None:
    assert f"property jolokiaPort {port!r} is not a port" in refused(
        {**MANAGER, "jolokiaPort": [port]}
    )


def test_a_single_valued_property_with_two_values_is_refused() -> None:
    assert "property queueName has 2 values: give exactly one" in refused(
        {**MANAGER, "queueName": ["a", "b"]}
    )


def test_an_unknown_icat_parameter_is_refused_with_the_nearest_name() -> None:
    message = refused({**MANAGER, "parameters": ["Sample_description", "Sample_descripton"]})
    assert "'Sample_descripton' (did you mean 'Sample_description'?)" in message
    assert "'Sample_description'," not in message  # the known one is not listed as unknown


def test_the_meta_experiment_device_must_be_a_device_name() -> None:
    message = refused({**MANAGER, "metaExperimentDevice": ["id00/metaexp"]})
    assert "'id00/metaexp' is not a Tango device name of the form domain/family/member" in message
    assert manager(metaExperimentDevice=["ID00/MetaExp/Test"]).meta_experiment == (
        "id00/metaexp/test"
    )


# -- secrets ----------------------------------------------------------------------------------


def test_a_secret_in_the_database_is_used_and_its_source_says_the_file_is_safer() -> None:
    delivery = manager(API_KEY=[SECRET], queuePasscode=[PASSCODE]).delivery
    assert (delivery.api_key, delivery.passcode) == (SECRET, PASSCODE)
    assert delivery.api_key_source == (
        "property API_KEY in the Tango database (API_KEY_FILE is safer)"
    )
    assert delivery.passcode_source.startswith("property queuePasscode in the Tango database")


def test_secrets_come_from_the_files_the_properties_name() -> None:
    secrets = FakeSecrets({"/etc/icat/key": SECRET, "/etc/icat/pass": PASSCODE})

    delivery = config.metadata_manager(
        {**MANAGER, "API_KEY_FILE": ["/etc/icat/key"], "queuePasscodeFile": ["/etc/icat/pass"]},
        secrets=secrets,
    ).delivery

    assert (delivery.api_key, delivery.passcode) == (SECRET, PASSCODE)
    assert delivery.api_key_source == "file /etc/icat/key"
    assert delivery.passcode_source == "file /etc/icat/pass"


def test_secrets_come_from_the_servers_environment() -> None:
    secrets = FakeSecrets(
        environment={config.API_KEY_ENVIRONMENT: SECRET, config.PASSCODE_ENVIRONMENT: PASSCODE}
    )
    delivery = config.metadata_manager(MANAGER, secrets=secrets).delivery
    assert (delivery.api_key, delivery.passcode) == (SECRET, PASSCODE)
    assert delivery.api_key_source == "environment variable ICAT_SERVERS_API_KEY"
    assert delivery.passcode_source == "environment variable ICAT_SERVERS_QUEUE_PASSCODE"


def test_the_file_wins_and_the_source_says_which_other_one_to_remove() -> None:
    secrets = FakeSecrets({"/k": SECRET}, {config.API_KEY_ENVIRONMENT: "from-env"})

    delivery = config.metadata_manager(
        {**MANAGER, "API_KEY_FILE": ["/k"], "API_KEY": ["in-db"]}, secrets=secrets
    ).delivery

    assert delivery.api_key == SECRET
    assert delivery.api_key_source == (
        "file /k (environment variable ICAT_SERVERS_API_KEY and property API_KEY not used: "
        "remove it)"
    )
    environment_only = config.metadata_manager(
        {**MANAGER, "API_KEY": ["in-db"]},
        secrets=FakeSecrets(environment={config.API_KEY_ENVIRONMENT: "from-env"}),
    ).delivery
    assert environment_only.api_key == "from-env"
    assert "property API_KEY not used" in environment_only.api_key_source


def test_a_meta_experiment_reads_no_api_key_but_its_broker_passcode() -> None:
    secrets = FakeSecrets({"/p": PASSCODE}, {config.API_KEY_ENVIRONMENT: SECRET})
    delivery = config.meta_experiment(
        {"beamlineID": ["id00"], "queuePasscodeFile": ["/p"]}, secrets=secrets
    ).delivery
    assert (delivery.api_key, delivery.api_key_source) == ("", "")
    assert delivery.passcode == PASSCODE


def test_no_secret_means_an_empty_source() -> None:
    delivery = config.metadata_manager(MANAGER, secrets=FakeSecrets()).delivery
    assert (delivery.api_key, delivery.api_key_source) == ("", "")
    assert (delivery.passcode, delivery.passcode_source) == ("", "")


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"API_KEY_FILE": ["etc/key"]}, "property API_KEY_FILE 'etc/key' is not an absolute path"),
        ({"API_KEY_FILE": ["/missing"]}, "secret file /missing does not exist"),
        ({"API_KEY_FILE": ["/empty"]}, "property API_KEY_FILE: the file /empty is empty"),
        ({"queuePasscodeFile": ["/a", "/b"]}, "property queuePasscodeFile has 2 values"),
    ],
)
def test_a_secret_file_that_cannot_give_a_secret_is_refused_with_the_fix(
    properties: dict[str, list[str]], expected: str
) -> None:
    message = refused({**MANAGER, **properties}, secrets=FakeSecrets({"/empty": ""}))
    assert expected in message


def test_a_reader_without_a_secret_source_refuses_a_secret_file_and_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.API_KEY_ENVIRONMENT, SECRET)
    assert config.metadata_manager(MANAGER).delivery.api_key == ""
    message = refused({**MANAGER, "API_KEY_FILE": ["/k"]})
    assert "API_KEY_FILE is set, but this reader was given no way to read files" in message


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    secrets = FakeSecrets({"/k": SECRET}, {config.PASSCODE_ENVIRONMENT: PASSCODE})
    settings = config.metadata_manager({**MANAGER, "API_KEY_FILE": ["/k"]}, secrets=secrets)
    shown = f"{settings!r} {settings} {settings.delivery!r} {settings.delivery}"
    assert SECRET not in shown and PASSCODE not in shown
    assert "api_key=*** (file /k)" in repr(settings.delivery)

    for bad in ({"API_KEY": [SECRET, SECRET]}, {"queuePasscode": [PASSCODE, "x"]}):
        assert SECRET not in refused({**MANAGER, **bad}) and PASSCODE not in refused(
            {**MANAGER, **bad}
        )


# -- the servers' secret source (files, environment) -----------------------------------------


def secret_file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "api_key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_secret_file_readable_by_its_user_only_is_read_without_the_newline(
    tmp_path: Path,
) -> None:
    path = secret_file(tmp_path, SECRET + "\n", 0o600)
    assert ServerSecrets({}).read_file(str(path)) == SECRET


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_secret_file_open_to_others_is_refused_naming_the_fix_not_the_content(
    tmp_path: Path, mode: int
) -> None:
    path = secret_file(tmp_path, SECRET, mode)
    with pytest.raises(ConfigurationError) as caught:
        ServerSecrets({}).read_file(str(path))
    message = str(caught.value)
    assert f"is open to group or others (mode {mode:04o}): chmod 600 {path}" in message
    assert SECRET not in message


def test_a_missing_secret_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigurationError, match="does not exist: create it"):
        ServerSecrets({}).read_file(str(missing))


def test_a_linked_secret_file_is_judged_by_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link"
    os.symlink(secret_file(tmp_path, SECRET, 0o600), link)
    assert ServerSecrets({}).read_file(str(link)) == SECRET
    (tmp_path / "api_key").chmod(0o644)
    with pytest.raises(ConfigurationError, match="open to group or others") as caught:
        ServerSecrets({}).read_file(str(link))
    assert SECRET not in str(caught.value)


def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a regular file"):
        ServerSecrets({}).read_file(str(tmp_path))


def test_the_servers_environment_is_read_stripped() -> None:
    secrets = ServerSecrets({config.API_KEY_ENVIRONMENT: f" {SECRET}\n"})
    assert secrets.environment(config.API_KEY_ENVIRONMENT) == SECRET
    assert secrets.environment(config.PASSCODE_ENVIRONMENT) == ""


def test_the_servers_secret_source_feeds_the_reader(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET, 0o600)
    settings = config.metadata_manager(
        {**MANAGER, "API_KEY_FILE": [str(path)]}, secrets=ServerSecrets({})
    )
    assert settings.delivery.api_key == SECRET
    assert settings.delivery.api_key_source == f"file {path}"


def test_status_lines_name_the_unused_properties_and_the_secret_sources_not_the_values() -> None:
    secrets = FakeSecrets({"/k": SECRET}, {config.PASSCODE_ENVIRONMENT: PASSCODE})
    settings = config.metadata_manager(
        {**MANAGER, "API_KEY_FILE": ["/k"], "globalHDFfiles": ["1"], "server": ["x"]},
        secrets=secrets,
    )

    assert config.unused_line(settings) == (
        "properties globalHDFfiles, server set but not used by these servers "
        "(tango-metadata's; they may be removed)"
    )
    assert config.secret_lines(settings.delivery) == (
        "broker passcode from environment variable ICAT_SERVERS_QUEUE_PASSCODE",
        "e-logbook API key from file /k",
    )
    assert config.unused_line(manager()) == ""
    assert config.secret_lines(manager().delivery) == ()
    assert config.unused_line(manager(port=["1"])).startswith("property port set but not used")


def test_an_unknown_parameter_is_named_before_a_missing_beamline() -> None:
    message = refused({"metaExperimentDevice": ["a/b/c"], "parameters": ["NotAnIcatName"]})
    assert "unknown ICAT parameter(s) 'NotAnIcatName'" in message
