import pytest

from tests.factories import SiteFactory, UserFactory, build_study, member
from trials.models import Role


@pytest.fixture
def sites(db):
    return SiteFactory(code="S01", name="Royal Infirmary"), SiteFactory(code="S02", name="University Hospital")


@pytest.fixture
def study(sites):
    return build_study(sites=list(sites))


@pytest.fixture
def coordinator_site_a(study, sites):
    return member("coord_a", study, Role.COORDINATOR, sites[0])


@pytest.fixture
def coordinator_site_b(study, sites):
    return member("coord_b", study, Role.COORDINATOR, sites[1])


@pytest.fixture
def monitor(study, sites):
    return member("monitor_a", study, Role.MONITOR, sites[0])


@pytest.fixture
def data_manager(study):
    return member("dm", study, Role.DATA_MANAGER)


@pytest.fixture
def statistician(study):
    return member("stats", study, Role.STATISTICIAN)


@pytest.fixture
def outsider(db):
    return UserFactory(username="outsider")
