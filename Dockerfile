FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY commine ./commine
RUN pip install --no-cache-dir .
ENTRYPOINT ["commine"]
CMD ["worker"]
