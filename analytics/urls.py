from django.urls import path

from analytics import views

app_name = "analytics"

urlpatterns = [
    path("studies/<slug:study_code>/", views.durability, name="durability"),
    path("studies/<slug:study_code>/definition/", views.definition_set, name="definition_set"),
    path("studies/<slug:study_code>/cuts/", views.cut_create, name="cut_create"),
    path("studies/<slug:study_code>/analyses/", views.analysis_request, name="analysis_request"),
    path("studies/<slug:study_code>/jobs/", views.job_list, name="job_list"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/status/", views.job_status, name="job_status"),
    path("jobs/<int:pk>/plots/<slug:name>.png", views.plot_png, name="plot_png"),
]
