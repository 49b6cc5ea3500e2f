use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::{admit, reject};
use crate::body::ResponseBody;
use crate::error::{AuthError, RenderRejection};
use crate::identity::Identity;

pin_project! {
    /// The response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<AF, S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<AF, S::Future>,
        inner: Option<S>,
        request: Option<Request<ReqBody>>,
        renderer: Option<Arc<dyn RenderRejection>>,
        custom_renderer: bool,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<AF, F> {
        Authenticating { #[pin] future: AF },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<Bytes>> },
    }
}

impl<AF, S, ReqBody> ResponseFuture<AF, S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn authenticating(
        future: AF,
        inner: S,
        request: Request<ReqBody>,
        renderer: Arc<dyn RenderRejection>,
        custom_renderer: bool,
    ) -> Self {
        Self {
            state: State::Authenticating { future },
            inner: Some(inner),
            request: Some(request),
            renderer: Some(renderer),
            custom_renderer,
        }
    }

    /// Authenticated already: only the inner service's future.
    pub(crate) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
            inner: None,
            request: None,
            renderer: None,
            custom_renderer: false,
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            inner: None,
            request: None,
            renderer: None,
            custom_renderer: false,
        }
    }
}

impl<AF, S, ReqBody, ResBody> Future for ResponseFuture<AF, S, ReqBody>
where
    AF: Future<Output = Result<Option<Identity>, AuthError>>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authenticating { future } => {
                    let outcome = ready!(future.poll(cx));
                    let Some(mut request) = this.request.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match outcome {
                        Ok(identity) => {
                            let renderer = this.renderer.take().filter(|_| *this.custom_renderer);
                            admit(&mut request, identity, renderer);
                            let Some(mut inner) = this.inner.take() else {
                                panic!("ResponseFuture polled after completion");
                            };
                            let future = inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(error) => {
                            let renderer = this
                                .renderer
                                .take()
                                .expect("renderer present while authenticating");
                            let response = reject(&*renderer, error, &request);
                            this.state.set(State::Rejected {
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::new)));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
