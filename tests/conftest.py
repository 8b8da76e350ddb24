pytest_plugins = ["tests.services.activemq", "tests.services.icat_mocks", "tests.services.tango_db"]
